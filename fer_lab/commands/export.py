"""``fer-lab export``: one-file ONNX with preprocessing metadata, parity check, optional int8."""
from __future__ import annotations

from . import print_json


def register(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (metadata inside, --check for parity)",
                       description="Export to a single ONNX file with a dynamic batch and the checkpoint's "
                                   "preprocessing (input size, mean/std, grayscale, labels, arch, crop recipe) "
                                   "in metadata_props.")
    p.add_argument("--weights", required=True, help="checkpoint path or shipped weights name")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format (onnx only)")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--check", action="store_true",
                   help="compare ONNX Runtime with PyTorch probabilities at two batch sizes (max abs diff <= 1e-4)")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="also write <out>.int8.onnx (dynamic int8 quantisation)")
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo",
                   help="torch.onnx exporter (dynamo falls back to torchscript on failure, with the reason)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inference.export import export_onnx

    report = export_onnx(args.weights, args.out, exporter=args.exporter, check=args.check, quantize=args.quantize)
    d = report.as_dict()
    if args.json:
        print_json(d)
    else:
        print(f"wrote {d['path']} ({d['size_bytes'] / 1e6:.2f} MB): {d['arch']}, input {d['input_size']}, "
              f"exporter {d['exporter']}, opset {d['opset']}")
        if d["fallback_reason"]:
            print(f"note: {d['fallback_reason']}; used the TorchScript exporter")
        if d["parity"]:
            par = d["parity"]
            for b, v in par["batches"].items():
                print(f"  parity batch {b}: max |prob diff| {v['max_abs_prob_diff']:.3g}, "
                      f"max |logit diff| {v['max_abs_logit_diff']:.3g}, argmax agree {v['argmax_agree']:.0%}")
            print(f"  parity {'OK' if par['ok'] else 'FAILED'} (tolerance {par['atol']:g})")
        if d["quantized"]:
            q = d["quantized"]
            print(f"int8: wrote {q['path']} ({q['size_bytes'] / 1e6:.2f} MB); vs float PyTorch max |prob diff| "
                  f"{q['vs_float_torch']['max_abs_prob_diff']:.3g}; test-set accuracy change: run fer-lab eval on it")
    if d["parity"] and not d["parity"]["ok"]:
        return 1
    return 0
