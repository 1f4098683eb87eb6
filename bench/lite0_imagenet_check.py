"""Is the converted Lite0 the real ImageNet model? Classify a folder of photos with its ``_fc`` head.

Prints the share of photos whose top-1 ImageNet class is the expected one (e.g. "daisy" for the
daisy folder of flowers5), the most frequent predictions, and, when the reference arrays are given,
whether every converted Keras weight equals them.

    python bench/lite0_imagenet_check.py --folder ../shared/data/flowers5/daisy --expect daisy \
        --labels ../shared/reference/imagenet_labels.txt \
        --reference ../shared/reference/efficientnet_lite0_imagenet_torchnames.npz
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import recsys  # noqa: E402,F401
from recsys.embedders import decode_image, lite0  # noqa: E402
from recsys.embedders.torch_pickle import load_legacy_state_dict  # noqa: E402


def main() -> None:
    shared = ROOT.parent / "shared"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=str(shared / "data" / "flowers5" / "daisy"))
    parser.add_argument("--expect", default="daisy", help="ImageNet class name expected on top.")
    parser.add_argument("--labels", default=str(shared / "reference" / "imagenet_labels.txt"))
    parser.add_argument(
        "--reference",
        default=str(shared / "reference" / "efficientnet_lite0_imagenet_torchnames.npz"),
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import tensorflow as tf

    # Line 0 is "background"; the classifier's 1000 outputs are lines 1..1000.
    names = Path(args.labels).read_text().splitlines()[1:]
    expected = [i for i, n in enumerate(names) if n.split(",")[0].strip() == args.expect]
    if not expected:
        sys.exit(f"error: class {args.expect!r} not in {args.labels}")
    with tempfile.TemporaryDirectory() as cache:
        model = lite0.load(Path(cache), include_top=True)
    infer = tf.function(lambda x: model(x, training=False))
    files = sorted(Path(args.folder).glob("*.jpg"))
    top1: list[int] = []
    for start in range(0, len(files), 64):
        batch = tf.stack([decode_image(tf.io.read_file(str(f))) for f in files[start : start + 64]])
        top1.extend(np.argmax(infer(batch).numpy(), axis=1).tolist())
    share = float(np.mean([t in expected for t in top1]))
    result = {
        "photos": len(files),
        "expected_class": args.expect,
        "top1_share": round(share, 4),
        "most_common": [(names[i].split(",")[0], n) for i, n in Counter(top1).most_common(5)],
    }
    if Path(args.reference).is_file():
        reference = np.load(args.reference)
        state = load_legacy_state_dict(lite0.packaged_weights_path())
        result["reader_equals_reference"] = all(
            np.array_equal(state[k], reference[k]) for k in reference.files
        )
        converted = dict(zip([w.name for w in model.weights], model.get_weights(), strict=True))
        result["keras_weights"] = len(converted)
        result["keras_equals_reference"] = bool(
            np.array_equal(
                converted["conv_stem/kernel:0"], reference["_conv_stem.weight"].transpose(2, 3, 1, 0)
            )
            and np.array_equal(converted["fc/kernel:0"], reference["_fc.weight"].T)
            and sum(v.size for v in converted.values())
            == sum(reference[k].size for k in reference.files if "num_batches" not in k)
        )
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:24s} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
