"""Online corpora: `harness datasets fetch fleurs|common-voice --lang L --out DIR`.

Downloads one split of the corpus from the Hugging Face Hub (huggingface_hub: resumable, honours
HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE) into the harness's cache, laid out as the corpus ships, and
then imports it exactly as `harness datasets import` does. Offline it fails with what to do instead.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from harness.data import importers
from harness.errors import UserError
from harness.weights.models import cache_dir

# FLEURS names its configurations by locale; the Whisper code's usual one (others: --subset).
FLEURS_SUBSETS = {"en": "en_us", "pt": "pt_br", "es": "es_419", "fr": "fr_fr", "de": "de_de", "it": "it_it",
                  "nl": "nl_nl", "ja": "ja_jp", "zh": "cmn_hans_cn", "hi": "hi_in", "ru": "ru_ru"}
FLEURS_REPO = "google/fleurs"
COMMON_VOICE_REPO = "mozilla-foundation/common_voice_17_0"  # gated: accept its terms, set HF_TOKEN
KINDS = ("fleurs", "common-voice")


def fetch(kind: str, lang: str, out: Path, split: str = "test", limit: int | None = None,
          subset: str | None = None, repo: str | None = None, force: bool = False) -> Path:
    """Download one split into the cache and import it into `out`; return the manifest path."""
    if kind == "fleurs":
        subset = subset or FLEURS_SUBSETS.get(lang)
        if subset is None:
            raise UserError(f"--lang {lang}: no default FLEURS subset; name it with --subset (e.g. pt_br)")
        src = _fleurs(repo or FLEURS_REPO, subset, split)
    elif kind == "common-voice":
        src = _common_voice(repo or COMMON_VOICE_REPO, subset or lang, split)
    else:
        raise UserError(f"unknown corpus to fetch {kind!r}; expected one of {', '.join(KINDS)}")
    return importers.import_dataset(kind, src, lang, out, split=split, limit=limit, force=force)


def _download(repo: str, filename: str, target: Path) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, repo_type="dataset", local_dir=target))
    except Exception as exc:  # noqa: BLE001 - offline, gated, missing file: all end the same way
        raise UserError(
            f"cannot download {filename} of the dataset {repo} from the Hugging Face Hub "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Offline or gated? Download the corpus "
            f"yourself and run `harness datasets import KIND FOLDER --lang LANG --out DIR`; for a gated dataset accept "
            f"its terms on huggingface.co and set HF_TOKEN") from None


def _fleurs(repo: str, subset: str, split: str) -> Path:
    """FLEURS as the Hub stores it: data/SUBSET/SPLIT.tsv and data/SUBSET/audio/SPLIT.tar.gz."""
    root = cache_dir() / "downloads" / repo.replace("/", "--")
    _download(repo, f"data/{subset}/{split}.tsv", root)
    _download(repo, f"data/{subset}/audio/{split}.tar.gz", root)
    return root / "data" / subset  # the fleurs importer unpacks the archive


def _common_voice(repo: str, lang: str, split: str) -> Path:
    """Common Voice on the Hub: transcript/LANG/SPLIT.tsv and audio/LANG/SPLIT/LANG_SPLIT_N.tar of mp3s;
    laid out as Mozilla's own release (SPLIT.tsv beside clips/) for the common-voice importer."""
    from huggingface_hub import list_repo_files

    root = cache_dir() / "downloads" / repo.replace("/", "--")
    tsv = _download(repo, f"transcript/{lang}/{split}.tsv", root)
    try:
        shards = sorted(f for f in list_repo_files(repo, repo_type="dataset")
                        if f.startswith(f"audio/{lang}/{split}/") and f.endswith(".tar"))
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"cannot list the audio of {repo} ({type(exc).__name__}); see above for how to import it yourself") from None
    src = root / "common-voice" / lang
    clips = src / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    (src / f"{split}.tsv").write_bytes(tsv.read_bytes())
    for shard in shards:
        with tarfile.open(_download(repo, shard, root)) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    member.name = Path(member.name).name  # the importer expects clips/NAME.mp3
                    tar.extract(member, clips, filter="data")
    return src
