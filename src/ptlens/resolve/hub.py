"""Hub downloads: only the files an analysis reads, into huggingface_hub's own cache."""

from __future__ import annotations

import os
from pathlib import Path

from ptlens.errors import PtlensError

WEIGHT_PATTERNS = ["*.safetensors", "model.safetensors.index.json"]
PICKLE_PATTERNS = ["*.bin", "pytorch_model.bin.index.json"]
META_PATTERNS = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
]


def _login_hint() -> str:
    return "run `hf auth login` (or set HF_TOKEN) with an account that has accepted the model's licence"


def fetch(repo_id: str, revision: str | None, *, allow_pickle: bool = False) -> tuple[Path, str | None]:
    """Download (or find in the cache) one checkpoint; return its folder and commit hash."""
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hf_errors

    where = f"{repo_id}@{revision}" if revision else repo_id
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    patterns = META_PATTERNS + WEIGHT_PATTERNS + (PICKLE_PATTERNS if allow_pickle else [])
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except hf_errors.GatedRepoError:
        raise PtlensError(f"{where}: gated model; {_login_hint()}") from None
    except hf_errors.RevisionNotFoundError:
        raise PtlensError(f"{where}: revision {revision!r} not found on the hub") from None
    except hf_errors.RepositoryNotFoundError:
        raise PtlensError(f"{where}: no such model on the hub (or private: {_login_hint()})") from None
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled):
        mode = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
        raise PtlensError(f"{where}: not in the local Hugging Face cache and {mode}; download it once with network access or pass a local folder") from None
    except hf_errors.HfHubHTTPError as e:
        raise PtlensError(f"{where}: hub request failed ({e.__class__.__name__}: {str(e).splitlines()[0]})") from None
    except OSError as e:
        raise PtlensError(f"{where}: could not download ({e})") from None
    commit = folder.name if folder.parent.name == "snapshots" else None
    if not any(folder.glob("*.safetensors")) and not allow_pickle:
        if any(folder.glob("*.bin")) or _remote_has_pickle(repo_id, revision, offline):
            raise PtlensError(f"{where}: only pickle *.bin weights; pass --allow-pickle to load them with weights_only=True")
        raise PtlensError(f"{where}: no *.safetensors weights in the snapshot")
    return folder, commit


def _remote_has_pickle(repo_id: str, revision: str | None, offline: bool) -> bool:
    if offline:
        return False
    try:
        from huggingface_hub import list_repo_files

        return any(f.endswith(".bin") for f in list_repo_files(repo_id, revision=revision))
    except Exception:  # noqa: BLE001 - a best-effort hint only
        return False
