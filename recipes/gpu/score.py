"""Score what a GPU session of recipes/gpu/run.sh brought back: the ablation table.

Usage: .venv/bin/python recipes/gpu/score.py RESULTS_DIR [-o runs/issue18] [--data SET ...]

RESULTS_DIR holds the files of $OUT (float-*.tar, qat.tar, logs.tar.gz, timing.json).
The checkpoints are unpacked into OUT/checkpoints, every one is scored with greedy and LM
decoding on each --data set (default: the shipped held-out sets flite-slt and
festival-slt; add data/corpus/test-*.jsonl for the 400-utterance sets), results go to
OUT/scores.jsonl (resumable: scored pairs are skipped) and a markdown table to
OUT/ablation.md, which it also prints.
"""

import argparse
import json
import tarfile
from pathlib import Path

LANE_ORDER = ["classic", "voices", "voices-speaker", "voices-channel", "voices-both", "all",
              "all-w8", "all-w4"]
RECIPES = {
    "classic": "shipped voices, no augmentation",
    "voices": "all English voices and accents, no augmentation",
    "voices-speaker": "+ speed and VTLP (speaker)",
    "voices-channel": "+ reverb, noise, band-limiting (channel)",
    "voices-both": "+ speaker and channel",
    "all": "both corpora (2x hours) + speaker and channel",
    "all-w8": "all, QAT 8-bit weights",
    "all-w4": "all, QAT 4-bit weights",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("-o", "--out", type=Path, default=Path("runs/issue18"))
    parser.add_argument("--data", action="append", default=None)
    parser.add_argument("--decoders", default="greedy,lm")
    args = parser.parse_args()
    data_sets = args.data or ["flite-slt", "festival-slt"]
    checkpoints = args.out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    for archive in sorted(args.results.glob("*.tar")):
        with tarfile.open(archive) as tar:
            tar.extractall(checkpoints, filter="data")
    logs = args.results / "logs.tar.gz"
    if logs.is_file():
        with tarfile.open(logs) as tar:
            tar.extractall(args.out / "device", filter="data")

    from mho.data.datasets import resolve_dataset
    from mho.runtime.recognizer import load_recognizer
    from mho.workflows.evaluate import evaluate

    scores_path = args.out / "scores.jsonl"
    scores = [json.loads(line) for line in scores_path.read_text().splitlines()] \
        if scores_path.is_file() else []
    done = {(s["run"], s["data"], s["decoder"]) for s in scores}
    sets = [resolve_dataset(spec) for spec in data_sets]
    runs = sorted(checkpoints.glob("*.pt"),
                  key=lambda p: LANE_ORDER.index(p.stem) if p.stem in LANE_ORDER else 99)
    for path in runs:
        for decoder in args.decoders.split(","):
            todo = [(name, utts) for name, utts in sets if (path.stem, name, decoder) not in done]
            if not todo:
                continue
            recognizer = load_recognizer(str(path), decoder=decoder)
            for name, utterances in todo:
                summary = evaluate(recognizer, utterances, data_name=name, progress=False,
                                   batch_size=16).summary()
                record = {"run": path.stem, **summary, "data": name, "decoder": decoder}
                scores.append(record)
                with scores_path.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(record) + "\n")
                print(f"{path.stem:16s} {name:22s} {decoder:7s} WER {summary['wer']:6.2f}",
                      flush=True)
    table = markdown(scores, [name for name, _ in sets], args.decoders.split(","))
    (args.out / "ablation.md").write_text(table)
    print(table)


def markdown(scores: list[dict], data_sets: list[str], decoders: list[str]) -> str:
    """Rows: runs in lane order; columns: WER per set and decoder."""
    by = {(s["run"], s["data"], s["decoder"]): s["wer"] for s in scores}
    runs = sorted({s["run"] for s in scores},
                  key=lambda r: LANE_ORDER.index(r) if r in LANE_ORDER else 99)
    columns = [(d, dec) for d in data_sets for dec in decoders]
    head = "| run | data recipe | " + " | ".join(f"{d} {dec}" for d, dec in columns) + " |"
    lines = [head, "|" + " --- |" * (2 + len(columns))]
    for run in runs:
        cells = [f"{by[(run, d, dec)]:.2f}" if (run, d, dec) in by else "-" for d, dec in columns]
        lines.append(f"| {run} | {RECIPES.get(run, '')} | " + " | ".join(cells) + " |")
    return "WER % (held-out slt voices)\n\n" + "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
