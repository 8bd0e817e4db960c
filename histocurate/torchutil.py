"""The torch helpers every model package shares (features, nuclick, cellvit).

One place decides which device a run uses and says clearly when it cannot have it, which
autocast a precision means on that device, how a checkpoint reaches the disk
(atomically: a reader never sees half a file), and how a file the user gives is read back
(`load_torch_file`: one line saying what the file is when it is not torch.save's). It
imports torch and the standard library only, so the model packages stay usable on their own.

>>> resolve_device("cpu")
device(type='cpu')
>>> autocast_dtype("auto", resolve_device("cpu")) is None
True
>>> autocast_dtype("bf16", resolve_device("cpu"))
torch.bfloat16
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal

import torch

from histocurate.errors import UserInputError

Precision = Literal["auto", "bf16", "fp16", "fp32"]
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")


class DeviceError(UserInputError):
    """The device asked for does not exist here (the message says what does)."""


def _visible() -> str:
    if not torch.cuda.is_available():
        built = torch.version.cuda
        why = (
            f"this torch build has CUDA {built} but no GPU is visible"
            if built
            else ("this torch build has no CUDA support")
        )
        masked = os.environ.get("CUDA_VISIBLE_DEVICES")
        if masked is not None:
            why += f" (CUDA_VISIBLE_DEVICES={masked!r})"
        return why
    count = torch.cuda.device_count()
    return f"{count} GPU(s) are visible: cuda:0 to cuda:{count - 1}"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) -> the first GPU when there is one, else the CPU; any other name
    is checked against what this machine has.

    >>> resolve_device(None).type in ("cpu", "cuda")
    True
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ...
    histocurate.torchutil.DeviceError: --device 'tpu' is not a torch device name; use auto, ...
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(
            f"--device {str(device)!r} is not a torch device name; use auto, cpu, cuda or cuda:N"
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: {_visible()}; use --device cpu (or auto)")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: {_visible()}")
    elif resolved.type not in ("cpu", "mps"):
        raise DeviceError(f"--device {device}: only cpu and cuda devices are supported")
    return resolved


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: plain float32).

    ``auto`` is bfloat16 on a GPU that supports it (float16 on older ones), float32 on the
    CPU, where autocast rarely pays.
    """
    if precision not in PRECISIONS:
        raise UserInputError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def autocast(device: torch.device, precision: str) -> Any:
    """The autocast context for ``precision`` on ``device`` (a no-op for float32)."""
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def amp_precision(amp: bool, device: torch.device) -> str:
    """The precision an on/off mixed-precision flag (NuClick's ``amp``) means on ``device``:
    bfloat16 on a GPU, float32 elsewhere (CPU autocast rarely pays).

    >>> amp_precision(True, torch.device("cpu"))
    'fp32'
    >>> amp_precision(True, torch.device("cuda"))
    'bf16'
    """
    return "bf16" if amp and device.type == "cuda" else "fp32"


def needs_grad_scaler(device: torch.device, precision: str) -> bool:
    """float16 training needs loss scaling (bfloat16 and float32 do not)."""
    return autocast_dtype(precision, device) is torch.float16


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: a crash mid-write
    leaves the previous file whole."""
    from histocurate.io.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run ``model`` in eval mode under ``torch.inference_mode``, restoring its mode after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6
_PICKLE_MAGIC = b"\x80"  # the legacy format: a pickle, protocol 2 or later


def describe_head(head: bytes) -> str:
    """Words for a file that is not what was expected, from its first bytes.

    >>> describe_head(b"")
    'it is empty'
    >>> describe_head(b"hello\\nworld\\n")
    "it is text, starting 'hello'"
    >>> describe_head(bytes(range(1, 12)))
    "it starts with the bytes b'\\\\x01\\\\x02\\\\x03\\\\x04\\\\x05\\\\x06\\\\x07\\\\x08'"
    """
    if not head:
        return "it is empty"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # text only if the sole bad bytes are a cut character
        text = head[: exc.start].decode("utf-8") if exc.start >= len(head) - 3 else ""
    if not text or not all(c.isprintable() or c.isspace() for c in text):
        return f"it starts with the bytes {head[:8]!r}"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    return f"it is text, starting {first!r}" if first else "it is blank text"


def torch_load_failure(exc: Exception) -> str:
    """torch.load's failure in one short line: its unpickling messages run to 15 lines of
    advice about ``weights_only`` that is not the user's to follow here."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = ""
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            if not rest and i + 1 < len(lines):
                rest = lines[i + 1]
            said = rest.split(". Please use")[0]
            break
    else:
        if lines and not lines[0].startswith("Weights only load failed"):
            said = lines[0].split(". This is an internal")[0]
    return f"{type(exc).__name__}: {said}" if said else type(exc).__name__


def load_torch_file(
    path: Path, *, give_instead: str, error: type[UserInputError] = UserInputError
) -> Any:
    """``torch.load(path)`` of a file the user gave, weights only, on the CPU.

    A file in neither of torch.save's formats (zip, or the legacy pickle) is refused from its
    first bytes as ``error`` "<path>: not a PyTorch checkpoint file (it is text, starting
    '...'); <give_instead>", without torch's 15-line unpickling message; torch's own
    failures (truncated, corrupt, objects other than tensors) are cut to one line. The caller
    checks that ``path`` is a file.
    """
    with path.open("rb") as f:
        head = f.read(64)
    if not head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        raise error(
            f"{path}: not a PyTorch checkpoint file ({describe_head(head)}); {give_instead}"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or holding more than weights
        raise error(
            f"{path}: not a readable PyTorch checkpoint ({torch_load_failure(exc)}); the file "
            f"may be truncated or corrupt (copy it again), or hold objects other than weights; "
            f"{give_instead}"
        ) from None
