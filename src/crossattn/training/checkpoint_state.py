"""The loop's own checkpoint state, written without pickle: JSON for numbers, safetensors for tensors.

accelerate's ``save_state`` stores registered custom objects as ``custom_checkpoint_N.pkl`` and
``load_state`` unpickles them with ``weights_only=False``: a run folder from someone else could run
code on ``--resume``. So the loop registers nothing with accelerate; beside accelerate's own files
(models as safetensors, optimizer and RNG states loaded with ``weights_only=True``) it writes

```
STEP/trainer_state.json    {"train_state": {"step", "batches"}, "lr_scheduler": {...}, "ema": {...numbers}}
STEP/ema.safetensors       the EMA shadow parameters, "shadow.0", "shadow.1", ... in parameter order
```

and :func:`check_loadable` refuses a checkpoint that holds any custom pickle before anything is read.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

STATE_FILE = "trainer_state.json"
EMA_FILE = "ema.safetensors"


def check_loadable(folder: Path) -> None:
    """Refuse checkpoints that would need unpickling (custom states) or that lack the loop's own state."""
    pickles = sorted(p.name for p in folder.glob("custom_checkpoint_*.pkl"))
    if pickles:
        raise ValueError(
            f"refusing to resume from {folder}: it holds pickled custom state ({', '.join(pickles)}), which "
            "could run code when loaded; crossattn checkpoints keep their state in trainer_state.json and "
            "ema.safetensors. Resume only from checkpoints written by this version of crossattn."
        )
    if not (folder / STATE_FILE).is_file():
        raise FileNotFoundError(f"{folder} has no {STATE_FILE}: not a checkpoint written by this version of crossattn")


def save_state(folder: Path, train_state, lr_scheduler, ema) -> None:
    """Write the loop position, the LR schedule and the EMA into ``folder`` (main process only)."""
    from safetensors.torch import save_file

    state = {"train_state": train_state.state_dict(), "lr_scheduler": lr_scheduler.state_dict()}
    if ema is not None:
        ema_state = ema.state_dict()
        shadow = ema_state.pop("shadow_params")
        state["ema"] = ema_state
        tensors = {f"shadow.{i}": p.detach().to("cpu").contiguous() for i, p in enumerate(shadow)}
        save_file(tensors, str(folder / EMA_FILE))
    (folder / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def load_state(folder: Path, train_state, lr_scheduler, ema, device) -> None:
    """Read back what :func:`save_state` wrote; a missing or mismatched EMA file is a clear error."""
    from safetensors.torch import load_file

    check_loadable(folder)
    state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    train_state.load_state_dict(state["train_state"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    if ema is None:
        return
    if "ema" not in state or not (folder / EMA_FILE).is_file():
        raise FileNotFoundError(f"{folder} holds no EMA state, but this run keeps an EMA (ema_decay > 0)")
    tensors = load_file(str(folder / EMA_FILE), device=str(device))
    shadow = [tensors[f"shadow.{i}"] for i in range(len(tensors))]
    if len(shadow) != len(ema.shadow_params):
        raise ValueError(f"{folder}: EMA holds {len(shadow)} tensors; this run trains {len(ema.shadow_params)}")
    ema.load_state_dict({**state["ema"], "shadow_params": [torch.as_tensor(t) for t in shadow]})
