#!/usr/bin/env python3
"""Builds assets/corpus/corpus.jsonl from redistributable text installed by Debian packages
and the local Swift package mirror, and writes assets/corpus/SOURCES.md.

Run once by a maintainer (not by tests):
    apt-get install fortunes fortunes-de fortunes-es fortunes-it pciutils
    python3 scripts/build_corpus.py

Each line of corpus.jsonl is one document: {"domain", "source", "license", "split", "text"}.
The held-out split is fixed here (every 20th document of each domain), so it never moves.
"""
import glob, json, os, pathlib, subprocess, sys, sysconfig

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "assets" / "corpus"
BUDGET = 600_000          # bytes of text per domain
HELD_OUT_EVERY = 20

FORTUNE_LICENSE = "BSD (Debian package fortunes, from BSD fortune(6))"
FORTUNE_DE_LICENSE = "GPL-2+ (Debian package fortunes-de)"
FORTUNE_ES_LICENSE = "public domain quotes; packaging GPL-2+ (Debian package fortunes-es)"
FORTUNE_IT_LICENSE = "public domain (Debian package fortunes-it)"
# Prose-like English collections first; ASCII art and offensive sections are left out.
ENGLISH = ["fortunes", "literature", "wisdom", "people", "humorists", "science", "work", "education", "love",
           "pets", "platitudes", "politics", "law", "medicine", "computers", "songs-poems", "miscellaneous",
           "food", "sports", "kids", "riddles", "linux", "magic", "news", "goedel", "pratchett", "tao"]


def fortunes(paths):
    for path in paths:
        with open(path, encoding="utf-8", errors="strict") as f:
            try:
                text = f.read()
            except UnicodeDecodeError:
                continue
        for item in text.split("\n%\n"):
            item = item.strip("\n%")
            if 40 <= len(item) <= 1500:
                yield os.path.relpath(path, "/usr/share/games/fortunes"), item


def code_files(paths, max_len=6000):
    for path, text in paths:
        # Split long files at blank lines into documents of at most max_len characters.
        doc = ""
        for block in text.split("\n\n"):
            if len(doc) + len(block) > max_len and doc:
                yield path, doc.strip("\n")
                doc = ""
            doc += block + "\n\n"
        if doc.strip():
            yield path, doc.strip("\n")


def python_stdlib():
    lib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    for name in ["textwrap", "string", "fractions", "statistics", "heapq", "bisect", "calendar", "difflib",
                 "shlex", "argparse", "json/decoder", "json/encoder", "csv", "dataclasses", "functools",
                 "random", "queue", "sched", "graphlib", "colorsys", "base64", "configparser", "glob", "fnmatch",
                 "tokenize", "copy", "pprint", "reprlib", "enum", "ipaddress", "html/parser", "gettext"]:
        p = lib / f"{name}.py"
        if p.exists():
            yield f"cpython/Lib/{name}.py", p.read_text(encoding="utf-8")


def git_files(repo, suffix, tag=None):
    bare = f"/opt/swift-packages/{repo}.git"
    ref = tag or subprocess.run(["git", "-C", bare, "tag", "--sort=-v:refname"], capture_output=True, text=True).stdout.split()[0]
    names = subprocess.run(["git", "-C", bare, "ls-tree", "-r", "--name-only", ref], capture_output=True, text=True).stdout.split("\n")
    for name in sorted(n for n in names if n.endswith(suffix)):
        text = subprocess.run(["git", "-C", bare, "show", f"{ref}:{name}"], capture_output=True, text=True).stdout
        yield f"{repo}@{ref}/{name}", text


def pci_ids():
    text = pathlib.Path("/usr/share/misc/pci.ids").read_text(encoding="utf-8", errors="replace")
    lines = [l for l in text.split("\n") if l and not l.startswith("#")]
    for i in range(0, len(lines), 40):
        yield "pciutils/pci.ids", "\n".join(lines[i:i + 40])


def take(domain, license, items):
    docs, used = [], 0
    for source, text in items:
        if used >= BUDGET:
            break
        docs.append({"domain": domain, "source": source, "license": license, "text": text})
        used += len(text.encode())
    for i, d in enumerate(docs):
        d["split"] = "heldout" if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else "train"
    return docs


def main():
    fdir = "/usr/share/games/fortunes"
    english = [f"{fdir}/{name}.u8" for name in ENGLISH if os.path.exists(f"{fdir}/{name}.u8")]
    domains = [
        take("english", FORTUNE_LICENSE, fortunes(english)),
        take("german", FORTUNE_DE_LICENSE, fortunes(sorted(glob.glob(f"{fdir}/de/*.u8")))),
        take("spanish", FORTUNE_ES_LICENSE, fortunes(sorted(glob.glob(f"{fdir}/es/*.u8")))),
        take("italian", FORTUNE_IT_LICENSE, fortunes(sorted(glob.glob(f"{fdir}/it/*.u8")))),
        take("python", "PSF-2.0 (CPython standard library)", code_files(python_stdlib())),
        take("swift", "Apache-2.0 (swift-argument-parser, swift-collections)",
             code_files(list(git_files("apple/swift-argument-parser", ".swift")) + list(git_files("apple/swift-collections", ".swift")))),
        take("markdown", "Apache-2.0 (swift-nio, swift-argument-parser documentation)",
             code_files(list(git_files("apple/swift-argument-parser", ".md")) + list(git_files("apple/swift-nio", ".md")), max_len=3000)),
        take("pci-ids", "GPL-2.0-or-later OR BSD-3-Clause (pciutils pci.ids)", pci_ids()),
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "corpus.jsonl", "w", encoding="utf-8") as f:
        for docs in domains:
            for d in docs:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
    lines = ["# Corpus sources", "",
             "Built by `scripts/build_corpus.py` from text that Debian packages and the Swift package mirror",
             "install; every source is under a licence that allows redistribution. Held-out split: every",
             f"{HELD_OUT_EVERY}th document of each domain.", "",
             "| domain | documents | held-out | bytes | source | licence |", "|---|---|---|---|---|---|"]
    for docs in domains:
        srcs = sorted({d["source"].split("/")[0] for d in docs})
        lines.append(f"| {docs[0]['domain']} | {len(docs)} | {sum(d['split'] == 'heldout' for d in docs)} | "
                     f"{sum(len(d['text'].encode()) for d in docs)} | {', '.join(srcs[:6])}{' …' if len(srcs) > 6 else ''} | {docs[0]['license']} |")
    (OUT / "SOURCES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
