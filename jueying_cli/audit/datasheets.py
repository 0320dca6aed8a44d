"""Published peak throughput per GPU model, dense (without 2:4 structured sparsity), in TFLOPS per GPU.

Each row cites the vendor datasheet it comes from, and says which of its figures are derived: `halved` names
the precisions whose dense figure is the datasheet's sparse figure halved. The Hopper datasheets (H100, H200)
and the HGX B200 page print the TF32, BF16, FP16 and FP8 Tensor Core figures only "with sparsity" (marked *,
"specifications are one-half lower without sparsity"), so those are halved here. The A100 and L40S datasheets
print the dense figure beside the sparse one (156 | 312*): those are taken as printed. V100 predates
sparsity. FP64 and FP32 are never sparse. None means the datasheet gives no figure for that precision (V100
has no BF16, TF32 or FP8; A100 no FP8; L40S lists no FP64; the datasheets give no FP64 Tensor Core figure
for V100): it is left out of the sums, never guessed. A model no row matches is reported by name as unknown.

Every row was checked (2026-12) against the figures of its datasheet as reproduced in public copies of its
table (the H100/H200 product tables, the A100 and L40S datasheet tables, NVIDIA's V100 pages, the HGX
page's per-GPU B200 figures); no figure differed. The H100 datasheet gives H100 NVL per GPU (30 / 60 / 60;
835*, 1,671*, 1,671*, 3,341*): an earlier edition printed it per pair of boards (68 / 134 / 134 ...), twice
these. The HGX page rounds B200's sparse TF32 to 2.2 PF (FP16 4.5 PF halved is 2.25): the table halves the
printed 2.2.

Rows match the name NVML reports (`nvidia-smi --query-gpu=name`), which differs from the marketing name
(an H100 SXM5 board says "NVIDIA H100 80GB HBM3").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

PRECISIONS = ("fp64", "fp64_tensor", "fp32", "tf32", "bf16", "fp16", "fp8")


@dataclass(frozen=True)
class Datasheet:
    model: str  # the product as the datasheet names it
    pattern: str  # regular expression matched (case-insensitive, whole name) against the NVML name
    tflops: Mapping[str, float | None]  # by precision, dense, per GPU
    source: str  # the datasheet's URL
    halved: frozenset[str] = frozenset()  # precisions whose dense figure is the datasheet's sparse figure / 2


def _row(model: str, pattern: str, source: str, *, fp64: float | None, fp64_tensor: float | None,
         fp32: float | None, tf32: float | None, bf16: float | None, fp16: float | None,
         fp8: float | None, halved: tuple[str, ...] = ()) -> Datasheet:
    return Datasheet(model, pattern, {"fp64": fp64, "fp64_tensor": fp64_tensor, "fp32": fp32, "tf32": tf32,
                                      "bf16": bf16, "fp16": fp16, "fp8": fp8}, source, frozenset(halved))


_SPARSE_ONLY = ("tf32", "bf16", "fp16", "fp8")  # printed only with sparsity (*): halved


_H100 = "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet"
_A100 = ("https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
         "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf")
_V100 = "https://images.nvidia.com/content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf"
_H200 = "https://nvdam.widen.net/s/nb5zzzsjdf/hpc-datasheet-sc23-h200-datasheet-3002446"

DATASHEETS: tuple[Datasheet, ...] = (
    # H100 datasheet: SXM 34 / 67 / 67 TFLOPS FP64, FP64 Tensor, FP32; TF32 989*, BF16 1979*, FP16 1979*,
    # FP8 3958* (* with sparsity).
    _row("H100 SXM", r"NVIDIA H100 80GB HBM3|NVIDIA H100 SXM.*", _H100,
         fp64=34, fp64_tensor=67, fp32=67, tf32=494.5, bf16=989.5, fp16=989.5, fp8=1979, halved=_SPARSE_ONLY),
    # PCIe: 26 / 51 / 51; TF32 756*, BF16 1513*, FP16 1513*, FP8 3026*.
    _row("H100 PCIe", r"NVIDIA H100 PCIe.*", _H100,
         fp64=26, fp64_tensor=51, fp32=51, tf32=378, bf16=756.5, fp16=756.5, fp8=1513, halved=_SPARSE_ONLY),
    # NVL, per GPU: 30 / 60 / 60; TF32 835*, BF16 1671*, FP16 1671*, FP8 3341*.
    _row("H100 NVL", r"NVIDIA H100 NVL.*", _H100,
         fp64=30, fp64_tensor=60, fp32=60, tf32=417.5, bf16=835.5, fp16=835.5, fp8=1670.5, halved=_SPARSE_ONLY),
    # H200 datasheet, SXM: the same compute as H100 SXM (34 / 67 / 67; 989*, 1979*, 1979*, 3958*).
    _row("H200 SXM", r"NVIDIA H200(?! NVL).*", _H200,
         fp64=34, fp64_tensor=67, fp32=67, tf32=494.5, bf16=989.5, fp16=989.5, fp8=1979, halved=_SPARSE_ONLY),
    # H200 NVL (the same datasheet): the same compute as H100 NVL (30 / 60 / 60; 835*, 1671*, 1671*, 3341*).
    _row("H200 NVL", r"NVIDIA H200 NVL", _H200,
         fp64=30, fp64_tensor=60, fp32=60, tf32=417.5, bf16=835.5, fp16=835.5, fp8=1670.5, halved=_SPARSE_ONLY),
    # HGX B200 specifications, per GPU: FP64 / FP64 Tensor 37, FP32 75; TF32 2.2 PF*, FP16/BF16 4.5 PF*,
    # FP8 9 PF* (* with sparsity).
    _row("B200 (HGX)", r"NVIDIA B200.*", "https://www.nvidia.com/en-us/data-center/hgx/",
         fp64=37, fp64_tensor=37, fp32=75, tf32=1100, bf16=2250, fp16=2250, fp8=4500, halved=_SPARSE_ONLY),
    # A100 datasheet (the same peak figures for 40/80 GB, SXM and PCIe): FP64 9.7, FP64 Tensor 19.5, FP32 19.5;
    # TF32 156 | 312*, BF16 312 | 624*, FP16 312 | 624*: the dense figures as printed. No FP8.
    _row("A100 SXM4", r"NVIDIA A100-SXM4-(40|80)GB", _A100,
         fp64=9.7, fp64_tensor=19.5, fp32=19.5, tf32=156, bf16=312, fp16=312, fp8=None),
    _row("A100 PCIe", r"NVIDIA A100-PCIE-40GB|NVIDIA A100 80GB PCIe", _A100,
         fp64=9.7, fp64_tensor=19.5, fp32=19.5, tf32=156, bf16=312, fp16=312, fp8=None),
    # L40S datasheet: FP32 91.6; TF32 183 | 366*, BF16 362.05 | 733*, FP16 362.05 | 733*, FP8 733 | 1,466*: the
    # dense figures as printed. No FP64 figure is given.
    _row("L40S", r"NVIDIA L40S", "https://resources.nvidia.com/en-us-l40s/l40s-datasheet-28413",
         fp64=None, fp64_tensor=None, fp32=91.6, tf32=183, bf16=362.05, fp16=362.05, fp8=733),
    # V100 datasheet: SXM2 FP64 7.8, FP32 15.7, Tensor (FP16) 125; PCIe 7, 14, 112; V100S PCIe 8.2, 16.4, 130.
    # No sparsity before Ampere: as printed.
    _row("V100 SXM2", r"Tesla V100-SXM2-(16|32)GB", _V100,
         fp64=7.8, fp64_tensor=None, fp32=15.7, tf32=None, bf16=None, fp16=125, fp8=None),
    _row("V100 PCIe", r"Tesla V100-PCIE-(16|32)GB", _V100,
         fp64=7, fp64_tensor=None, fp32=14, tf32=None, bf16=None, fp16=112, fp8=None),
    _row("V100S PCIe", r"Tesla V100S-PCIE-32GB", _V100,
         fp64=8.2, fp64_tensor=None, fp32=16.4, tf32=None, bf16=None, fp16=130, fp8=None),
)

_COMPILED = tuple((re.compile(d.pattern, re.IGNORECASE), d) for d in DATASHEETS)


def datasheet_for(nvml_name: str) -> Datasheet | None:
    """The row for a GPU as NVML names it, or None for a model the table does not know."""
    name = " ".join(nvml_name.split())
    for pattern, sheet in _COMPILED:
        if pattern.fullmatch(name):
            return sheet
    return None


def peak_tflops(gpus: Mapping[str, int]) -> tuple[dict[str, float], list[str]]:
    """({precision: TFLOPS summed over `gpus` (NVML name -> count)}, the names no row matches). A precision a
    model has no figure for adds nothing; a precision no GPU of the mix has is left out."""
    total: dict[str, float] = {}
    unknown: list[str] = []
    for name, count in sorted(gpus.items()):
        sheet = datasheet_for(name)
        if sheet is None:
            unknown.append(name)
            continue
        for precision in PRECISIONS:
            value = sheet.tflops.get(precision)
            if value is not None and count:
                total[precision] = round(total.get(precision, 0.0) + value * count, 3)
    return total, unknown
