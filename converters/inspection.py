"""`converters inspect`: what a bundle is: manifest, tensors, quantisation, head, ops, size.

Uses only edge and the LiteRT runtime (no TensorFlow), so it also works on a device.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from edge.model import TensorInfo, check_golden, interpreter_class, load_bundle


def graph_details(model_path: Path) -> dict[str, Any]:
    """Op counts and tensor dtypes of the graph as written (before any delegate rewrites it)."""
    cls = interpreter_class()
    try:
        from ai_edge_litert.interpreter import OpResolverType

        interp = cls(
            model_path=str(model_path),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    except ImportError:  # tflite-runtime: no resolver choice; delegated ops show as DELEGATE
        interp = cls(model_path=str(model_path))
    interp.allocate_tensors()
    ops = Counter(op["op_name"] for op in interp._get_ops_details())
    tensors = interp.get_tensor_details()
    dtypes = Counter(str(t["dtype"].__name__) for t in tensors)
    quantized = sum(1 for t in tensors if t["quantization"][0])
    return {
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "tensor_dtypes": dict(sorted(dtypes.items())),
        "quantized_tensors": quantized,
        "tensors": len(tensors),
    }


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def describe(bundle_dir: Path) -> dict[str, Any]:
    """Everything `inspect` shows, as JSON-ready data."""
    bundle = load_bundle(bundle_dir)
    model_path = bundle.path / bundle.manifest.model_file
    golden = check_golden(bundle)
    return {
        "manifest": bundle.manifest.model_dump(mode="json"),
        "tensors": {
            "input": _tensor(bundle.model.input),
            "output": _tensor(bundle.model.output),
        },
        "graph": graph_details(model_path),
        "size_bytes": {"model": model_path.stat().st_size, "bundle": _size(bundle.path)},
        "head": bundle.manifest.head.describe(bundle.model.output.shape[-1], len(bundle.labels)),
        "golden": None
        if golden is None
        else {
            "passed": golden.passed,
            "max_abs_dp": golden.max_abs_dp,
            "atol": golden.atol,
            "parity_on": golden.parity_on,
            "parity": golden.parity_dp,
            "parity_atol": golden.parity_atol,
        },
    }


def _tensor(info: TensorInfo) -> dict[str, Any]:
    d = info.to_dict()
    if info.quantized:
        assert info.scale is not None and info.zero_point is not None
        lo, hi = (0, 255) if info.dtype == "uint8" else (-128, 127)
        d["float_range"] = [
            (lo - info.zero_point) * info.scale,
            (hi - info.zero_point) * info.scale,
        ]
    return d


def _tensor_line(d: dict[str, Any]) -> str:
    text = f"{d['shape']} {d['dtype']}"
    if d.get("scale"):
        lo, hi = d["float_range"]
        text += (
            f"  scale {d['scale']:.6g} zero_point {d['zero_point']}  (floats {lo:.4g}..{hi:.4g})"
        )
    return text


def render(info: dict[str, Any]) -> str:
    """The human-readable form of `describe`."""
    m = info["manifest"]
    prov, ver, conv = m["provenance"], m["verification"], m["provenance"].get("conversion") or {}
    size = info["size_bytes"]
    graph = info["graph"]
    lines = [
        f"name         {m['name']}  (form {m['form']}, {m['quantization']})",
        f"labels       {', '.join(m['labels'])}",
        f"input        {_tensor_line(info['tensors']['input'])}  range {m['input_range']}",
        f"output       {_tensor_line(info['tensors']['output'])}",
    ]
    lines.append(f"head         {info['head']}")
    lines += [
        f"preprocess   {m['preprocessing']}",
        "ops          " + ", ".join(f"{k} x{v}" for k, v in graph["ops"].items()),
        f"tensors      {graph['tensors']} ({graph['quantized_tensors']} quantised): "
        + ", ".join(f"{k} {v}" for k, v in graph["tensor_dtypes"].items()),
        f"size         model {size['model'] / 1024:.1f} KiB, bundle {size['bundle'] / 1024:.1f} KiB"
        f"  (model sha256 {m['model_sha256'][:12]})",
        f"source       {prov.get('source_model')}  sha256 "
        f"{(prov.get('source_model_sha256') or '')[:12]}",
        f"data         fingerprint {prov.get('data_fingerprint')}",
    ]
    cal = conv.get("calibration")
    if cal:
        lines.append(
            f"calibration  {cal['count']} images {cal['per_class']} from {cal['source']} "
            f"(seed {cal['seed']})"
        )
    if info["golden"] is not None:
        g = info["golden"]
        parity = ""
        if g["parity"] is not None:
            tol = "none" if g["parity_atol"] is None else f"{g['parity_atol']:.4g}"
            parity = f"parity ({g['parity_on']}) {g['parity']:.4g} (tolerance {tol}), "
        lines.append(
            f"golden       {m['golden']['count']} images, {parity}vs float max |dp| "
            f"{g['max_abs_dp']:.4g} (tolerance {g['atol']}): "
            f"{'passes' if g['passed'] else 'FAILS'}"
        )
    verdict = ver["status"]
    if ver.get("agreement") is not None:
        verdict += f" ({100 * ver['agreement']:.1f}% agreement on {ver['n_images']} images"
        verdict += f", {ver['at']})"
    if ver["status"] != "passed":
        verdict += "  -- run `converters verify` before deploying"
    lines.append(f"verification {verdict}")
    return "\n".join(lines)
