"""Load a MovieLens download (movies.csv, ratings.csv, posters/<movieId>.jpg) into a workspace.

MovieLens is for research use and is not redistributed: users point this at their own copy.
Movies with a poster become items (key ``movie/<movieId>``, label = first genre, all genres in
the metadata); every rating becomes a ``view`` event and ratings >= ``like_threshold`` also a
``like``, at the rating's real timestamp. Idempotency keys make a re-run store nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from recsys.catalog import CatalogEntry, ingest_entries
from recsys.errors import RecsysError
from recsys.interactions import NewEvent, record


@dataclass
class MovieLensReport:
    movies: int = 0
    movies_with_poster: int = 0
    items_added: int = 0
    ratings: int = 0
    ratings_on_posters: int = 0
    events_stored: int = 0
    events_already_present: int = 0
    image_problems: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _read(path: Path, columns: list[str]):
    import pandas as pd

    if not path.is_file():
        raise RecsysError(
            f"{path}: missing (expected a MovieLens folder with movies.csv, ratings.csv, posters/)"
        )
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RecsysError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise RecsysError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def ingest_movielens(
    workspace, folder: str | Path, *, like_threshold: float = 4.0, progress: bool = True, on_problem=None
) -> MovieLensReport:
    """Ingest the posters as items and the ratings as events (see the module docstring)."""
    from tqdm import tqdm

    folder = Path(folder)
    movies = _read(folder / "movies.csv", ["movieId", "title", "genres"])
    ratings = _read(folder / "ratings.csv", ["userId", "movieId", "rating", "timestamp"])
    posters = folder / "posters"
    if not posters.is_dir():
        raise RecsysError(f"{posters}: missing (expected posters/<movieId>.jpg)")
    report = MovieLensReport(movies=len(movies), ratings=len(ratings))
    entries = []
    for movie_id, title, genres in movies[["movieId", "title", "genres"]].itertuples(index=False):
        poster = posters / f"{int(movie_id)}.jpg"
        if not poster.is_file():
            continue
        genre_list = [g for g in str(genres).split("|") if g and g != "(no genres listed)"]
        entries.append(
            CatalogEntry(
                key=f"movie/{int(movie_id)}",
                source=str(poster.resolve()),
                label=genre_list[0] if genre_list else None,
                title=str(title),
                meta={"movieId": int(movie_id), "genres": genre_list},
            )
        )
    report.movies_with_poster = len(entries)
    ingested = ingest_entries(workspace, entries, progress=progress, on_problem=on_problem)
    report.items_added = ingested.added
    report.image_problems = len(ingested.failed)
    with_poster = {e.key for e in entries} - {k for k, _ in ingested.failed}
    rows = ratings[ratings["movieId"].map(lambda m: f"movie/{int(m)}" in with_poster)]
    report.ratings_on_posters = len(rows)
    events = []
    for user, movie, rating, ts in rows[["userId", "movieId", "rating", "timestamp"]].itertuples(index=False):
        when = datetime.fromtimestamp(int(ts), UTC)
        key, base = f"movie/{int(movie)}", f"ml:{int(user)}:{int(movie)}"
        events.append(NewEvent(f"ml-{int(user)}", key, "view", when, None, f"{base}:view"))
        if rating >= like_threshold:
            events.append(NewEvent(f"ml-{int(user)}", key, "like", when, None, f"{base}:like"))
    batch = 5000
    for start in tqdm(range(0, len(events), batch), desc="ratings", unit="batch", disable=not progress):
        part = record(workspace, events[start : start + batch])
        report.events_stored += part.stored
        report.events_already_present += part.duplicates
    return report
