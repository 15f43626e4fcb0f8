"""Settings section for models/ (owned by models/)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class ModelSettings(BaseModel):
    """Where encoder artifacts live and which one serving uses."""

    model_config = ConfigDict(extra="forbid")

    artifacts_dir: Path = Path(".coldstart/artifacts")
    # None = the newest artifact under artifacts_dir.
    artifact: Path | None = None
    # onnxruntime execution providers, in order of preference; CUDA is used when present.
    providers: list[str] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
