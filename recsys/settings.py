"""One settings object, read from ``RECSYS_*`` environment variables and then CLI flags."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from recsys.errors import RecsysError

DEFAULT_MODEL = "efficientnet-lite0"


@dataclass(frozen=True)
class Settings:
    """Where the workspace lives and how jobs run.

    Attributes:
        home: Workspace folder: the SQLite file, the image store, cached weights and indexes.
        db_url: SQLAlchemy URL; ``None`` means a SQLite file inside ``home``.
        model: Embedding model name (see ``recsys.embedders.MODELS``).
        max_side: Longest side, in pixels, of images kept in the image store.
        batch_size: Images per inference batch, and embeddings per committed transaction.
        workers: Threads that fetch and resize images during ingest.
        timeout: Seconds before one HTTP download attempt is abandoned.
        retries: Extra attempts for a download that failed for a transient reason.
        max_pixels: Images with more pixels than this are refused as decompression bombs.
        index_factory: faiss index_factory string for `recsys index`, or "auto".
        index_memory_gb: Memory budget that "auto" keeps the index within.
        half_life_days: Recency half-life of events in profiles; None weighs all alike.
        history_limit: A recommendation reads only a user's latest this many events (profile,
            exclusions, explanations), so its cost is bounded however long the history grows.
        mmr_lambda: Relevance share in maximal-marginal-relevance diversification (0..1).
        spark_master: Spark master URL for `recsys embed --engine spark`.
        max_weight: Largest weight an event may carry; larger (or non-finite) weights are refused,
            so one client cannot drown everyone's popularity counts.
        upload_max_pixels: Uploads (visual search) with more pixels than this answer 413; far below
            ``max_pixels`` because a decoded upload lives in the server's memory.
        upload_decodes: Uploads decoded at once per server process; more wait a second, then 503.
        cookie_secure: Mark the session cookie Secure (set it when the site is served over HTTPS).
        limit_api_writes: Rate limit on API writes, per token, counted in events (a batch of 1,000
            costs 1,000; Flask-Limiter syntax). A minute's window, so that a whole batch fits.
        limit_api_reads: Rate limit on API reads (recommendations, similar items), per token: each
            list read is logged as shown.
        limit_page_writes: Rate limit on clicks recorded from the page, per client address.
        limit_page_reads: Rate limit on page views (each one serves and logs a list), per client
            address.
        limit_uploads: Rate limit on visual searches, per token or client address.
        limit_new_visitors: Rate limit on new page visitors, per client address.
        limit_admin_logins: Rate limit on admin sign-in attempts, per client address.
        limit_storage: Where rate-limit counters live: "local" (a file in the workspace that every
            server process of this machine shares), redis://host (several machines), or memory://
            (each process its own: limits then multiply by the number of processes).
        trusted_proxies: Reverse proxies in front of the server whose X-Forwarded-* headers are
            believed (0: none; the client address is the socket's).
        ease_memory_gb: Memory EASE may use for its items x items matrices; above, it refuses.
        new_item_weight: How much ``auto`` weighs new items against known ones: it serves the
            strategy best by (1 - w) x warm recall@10 + w x reach x recall@10 on new items, from
            the latest temporal and cold-item evaluations.
        log_impressions: Log every served list and its items (``impressions``), for click-through
            rates and experiments.
        impression_retention_days: `recsys impressions prune` deletes impressions older than this.
        allowed_hosts: Comma-separated Host names the web server answers (empty: any; demo mode
            always answers loopback names only).
    """

    home: Path = Path("recsys-home")
    db_url: str | None = None
    model: str = DEFAULT_MODEL
    max_side: int = 256
    batch_size: int = 64
    workers: int = 8
    timeout: float = 20.0
    retries: int = 3
    max_pixels: int = 64_000_000
    index_factory: str = "auto"
    index_memory_gb: float = 4.0
    half_life_days: float | None = None
    history_limit: int = 500
    mmr_lambda: float = 0.7
    spark_master: str = "local[*]"
    max_weight: float = 100.0
    upload_max_pixels: int = 16_000_000
    upload_decodes: int = 2
    cookie_secure: bool = False
    limit_api_writes: str = "60000 per minute"
    limit_api_reads: str = "200 per second"
    limit_page_writes: str = "60 per minute"
    limit_page_reads: str = "300 per minute"
    limit_uploads: str = "30 per minute"
    limit_new_visitors: str = "20 per hour"
    limit_admin_logins: str = "10 per minute"
    limit_storage: str = "local"
    trusted_proxies: int = 0
    allowed_hosts: str = ""
    ease_memory_gb: float = 8.0
    new_item_weight: float = 0.2
    log_impressions: bool = True
    impression_retention_days: float = 90.0

    def __post_init__(self) -> None:
        # Resolved once, here: no code path may depend on the working folder later (Flask's
        # send_file, for one, resolves a relative path against the package, not the cwd).
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'recsys.db'}"

    @property
    def images_dir(self) -> Path:
        return self.home / "images"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def index_dir(self) -> Path:
        return self.home / "indexes"

    def replace(self, **overrides: Any) -> Settings:
        """Return a copy with the non-``None`` overrides applied (how CLI flags win over env)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **_coerce(given))

    def environment(self) -> dict[str, str]:
        """These settings as ``RECSYS_*`` variables (``from_env`` reads them back): how a process
        started afresh gets the settings of the one that started it."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f"RECSYS_{f.name.upper()}"] = (
                    str(value).lower() if isinstance(value, bool) else str(value)
                )
        return out

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``RECSYS_<FIELD>`` variables, then apply ``overrides``."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(f"RECSYS_{f.name.upper()}")
            if raw not in (None, ""):
                values[f.name] = raw
        return cls().replace(**values).replace(**overrides)


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    types = {f.name: f.type for f in fields(Settings)}
    out = {}
    for name, value in values.items():
        if name not in types:
            raise RecsysError(f"unknown setting {name!r}")
        kind = types[name]
        try:
            if name == "home":
                out[name] = Path(value)
            elif kind == "bool":
                out[name] = _boolean(value)
            elif kind == "int":
                out[name] = int(value)
            elif kind.startswith("float"):
                out[name] = float(value)
            else:
                out[name] = value
        except (TypeError, ValueError):
            raise RecsysError(f"setting {name}: {value!r} is not a valid {kind}") from None
        zero_ok = ("retries", "mmr_lambda", "trusted_proxies")
        if kind.startswith(("int", "float")) and out[name] <= 0 and not (out[name] == 0 and name in zero_ok):
            raise RecsysError(f"setting {name}: must be positive, got {value!r}")
    return out


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)
