"""Collects recipes/table1.sh's sweeps into one markdown table (printed):
python recipes/table1.py OUT DATA. Columns whose sweeps were not run are left out, and
models whose sweeps have not finished."""

import json
import sys
from pathlib import Path

PE_VARIANTS = ("none", "sinusoidal-linear", "learnable-linear", "sinusoidal", "learnable")
COLUMNS = {
    "per-channel": "all layers on crossbars, per-channel depthwise",
    "block-diagonal": "all layers on crossbars, block-diagonal depthwise",
    "depthwise-digital": "depthwise digital",
}


def rows_of(path: Path) -> dict[str, dict]:
    return {row["preset"]: row for row in json.loads(path.read_text())["settings"]}


def cell(row: dict, base: float) -> str:
    relative = (row["wer"] - base) / base * 100
    return f"{row['wer']:.2f} ± {row['wer_std']:.2f} (+{relative:.0f}%)"


def main(out: Path, data: str) -> None:
    first = out / f"conformer-{PE_VARIANTS[0]}-w8"
    columns = [c for c in COLUMNS if (first / c / "sweep.json").exists()]
    print(f"### Table 1 on {data}: WER % (LM), ADC (4, 4), mean ± std over programming runs "
          "(relative degradation from the digital QAT model)\n")
    print("| PE | weights | digital QAT | " + " | ".join(COLUMNS[c] for c in columns) + " |")
    print("| --- | --- | ---: |" + " ---: |" * len(columns))
    runs = 0
    for pe in PE_VARIANTS:
        for bits in (8, 4):
            model = out / f"conformer-{pe}-w{bits}"
            if not all((model / c / "sweep.json").exists() for c in columns):
                continue  # not run (yet): a partial table
            sweeps = [rows_of(model / c / "sweep.json") for c in columns]
            base = sweeps[0]["base"]["wer"]
            runs = sweeps[0]["custom"]["runs"]
            print(f"| {pe} | {bits}-bit | {base:.2f} | "
                  + " | ".join(cell(s["custom"], base) for s in sweeps) + " |")
    print(f"\n{runs} chips per cell (seeds 0..{runs - 1}); `recipes/table1.sh` reproduces it.")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
