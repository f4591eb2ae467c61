"""What a quantization run is asked to do, checked before any model loads (and before torch is
imported, so a refused setting or input answers at once)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lmstack.data import dataset_path, read_records
from lmstack.errors import LmstackError
from lmstack.home import check_output
from lmstack.inputs import read_text

DEFAULT_CALIBRATION = "lmstack:general_calibration"
TEXT_SUFFIXES = (".txt", ".md", "")

METHODS = ("int8", "int4", "nf4", "llm-int8", "smoothquant", "gptq", "awq")
CALIBRATED = ("gptq", "awq", "smoothquant")
class QuantSettings(BaseModel):
    """A quantization recipe; every value is range-checked before any model loads."""

    model_config = ConfigDict(extra="forbid")

    # "rtn": round to nearest on grids given by the caller (GGUF export)
    method: Literal["int8", "int4", "nf4", "llm-int8", "smoothquant", "gptq", "awq", "rtn"]
    bits: Literal[4, 8] = 4  # gptq and awq
    scheme: Literal["absmax", "zeropoint"] = "absmax"  # int8
    granularity: Literal["tensor", "channel", "group"] = "channel"  # int8
    group_size: int = Field(32, ge=8, le=8192, multiple_of=8)  # int4/gptq/awq, and int8 --granularity group
    head: Literal["int8", "int4", "float"] = "int8"  # the output head (and a tied embedding)
    act_order: bool = True  # gptq
    damp: float = Field(0.01, ge=0.0, le=1.0, allow_inf_nan=False)  # gptq
    alpha: float = Field(0.5, ge=0.0, le=1.0, allow_inf_nan=False)  # smoothquant
    threshold: float = Field(6.0, gt=0.0, le=1e4, allow_inf_nan=False)  # llm-int8
    search: int = Field(10, ge=0, le=50)  # clipping candidates per group (int4, gptq, awq); 0: min/max
    calib: str = DEFAULT_CALIBRATION  # gptq, awq, smoothquant: a text file or dataset
    samples: int = Field(32, ge=1, le=4096)  # calibration windows
    seq_len: int = Field(256, ge=16, le=32768)  # tokens per window

    @property
    def calibrated(self) -> bool:
        return self.method in CALIBRATED

    def recipe(self) -> dict:
        """The settings that matter for this method (what the registry records)."""
        used = {"method", "head"} | {
            "int8": {"scheme", "granularity"} | ({"group_size"} if self.granularity == "group" else set()),
            "int4": {"group_size", "search"},
            "nf4": set(), "rtn": set(),
            "llm-int8": {"threshold"},
            "smoothquant": {"alpha", "calib", "samples", "seq_len"},
            "gptq": {"bits", "group_size", "act_order", "damp", "search", "calib", "samples", "seq_len"},
            "awq": {"bits", "group_size", "search", "calib", "samples", "seq_len"},
        }[self.method]
        return {key: value for key, value in self.model_dump().items() if key in used}


def parse_settings(**values) -> QuantSettings:
    try:
        return QuantSettings(**values)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise LmstackError(f"invalid quantization setting {where}: {first['msg']}") from None


def read_calibration_source(source: str) -> str | list[dict]:
    """A calibration text file's content, or a dataset's records (checked: exists, UTF-8, not empty)."""
    path = dataset_path(source)
    if path.suffix.lower() in TEXT_SUFFIXES:
        return read_text(path, "calibration data")
    return read_records(source)


def check_request(out: str | Path, settings: QuantSettings, eval_text: str | None,
                  overwrite: bool) -> tuple[Path, str | list[dict] | None, str | None]:
    """(output folder, calibration content, evaluation text): every user input, checked."""
    out = check_output(out, overwrite=overwrite)
    calibration = read_calibration_source(settings.calib) if settings.calibrated else None
    evaluation = read_text(dataset_path(eval_text), "evaluation text") if eval_text else None
    return out, calibration, evaluation
