"""moescope's checkpoint format (config.json + model.safetensors + tokenizer.json), written
atomically, and the resumable training state."""

import os
import shutil
import tempfile

import torch
from safetensors.torch import save_file

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def write_atomically(path: str, write):
    """Calls write(tmp_path) on a temporary file beside `path`, then renames it into place, so
    an interrupted write never leaves a torn file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; a checkpoint is an ordinary file
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def checkpoint_tensors(model) -> dict:
    """Every parameter under its moescope name (the tied LM head once, as the embedding)."""
    return {name: p.detach().float().cpu().contiguous() for name, p in model.named_parameters()}


def save_checkpoint(model, tokenizer_path: str, directory: str, dtype: str = "f16", metadata: dict | None = None):
    os.makedirs(directory, exist_ok=True)
    config = model.config
    write_atomically(os.path.join(directory, "config.json"),
                     lambda tmp: open(tmp, "w", encoding="utf-8").write(config.to_json()))
    write_atomically(os.path.join(directory, "tokenizer.json"), lambda tmp: shutil.copyfile(tokenizer_path, tmp))
    info = {"format": "pt", "router": config.router, "trainer": "torch_moe"}
    info.update({k: str(v) for k, v in (metadata or {}).items()})
    tensors = {name: t.to(DTYPES[dtype]) for name, t in checkpoint_tensors(model).items()}
    write_atomically(os.path.join(directory, "model.safetensors"), lambda tmp: save_file(tensors, tmp, metadata=info))


STATE_FORMAT = "torch_moe-training-state"


def save_state(path: str, model, optimizer, step: int, options: dict, config_json: str):
    state = {"format": STATE_FORMAT, "step": step, "options": options, "config": config_json,
             "model": {k: v.cpu() for k, v in model.state_dict().items()}, "optimizer": optimizer.state_dict()}

    def write(tmp):
        with open(tmp, "wb") as f:
            torch.save(state, f)
    write_atomically(path, write)


def load_state(path: str):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:   # a torn or foreign file: say which, never a traceback
        raise ValueError(f"{path} is not a readable training state ({type(error).__name__}) — delete it to start over")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a torch_moe training state — delete it to start over")
    return state
