"""Collects recipes/table1.sh's sweeps into one markdown table (printed):
python recipes/table1.py OUT DATA."""

import json
import sys
from pathlib import Path

PE_VARIANTS = ("none", "sinusoidal-linear", "learnable-linear", "sinusoidal", "learnable")


def rows_of(path: Path) -> dict[str, dict]:
    return {row["preset"]: row for row in json.loads(path.read_text())["settings"]}


def cell(row: dict) -> str:
    return f"{row['wer']:.2f} ± {row['wer_std']:.2f}"


def main(out: Path, data: str) -> None:
    print(f"### Table 1 on {data}: WER % (LM), ADC (4, 4), mean ± std over programming runs\n")
    print("| PE | weights | digital QAT | all layers on crossbars | depthwise digital |")
    print("| --- | --- | ---: | ---: | ---: |")
    for pe in PE_VARIANTS:
        for bits in (8, 4):
            model = out / f"conformer-{pe}-w{bits}"
            crossbar = rows_of(model / "crossbar" / "sweep.json")
            depthwise = rows_of(model / "depthwise-digital" / "sweep.json")
            print(f"| {pe} | {bits}-bit | {crossbar['base']['wer']:.2f} | "
                  f"{cell(crossbar['custom'])} | {cell(depthwise['custom'])} |")
    runs = crossbar["custom"]["runs"]
    print(f"\n{runs} chips per cell (seeds 0..{runs - 1}); `recipes/table1.sh` reproduces it.")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
