"""Real text for the parity gate, the int8 retrieval check and the benchmarks.

Nothing is downloaded: prose comes from the docstrings of Python's standard library (real
paragraphs of varying length, the same on every machine with the same Python), code from its
sources; the non-English and emoji lines are written here.
"""

from __future__ import annotations

import importlib
import inspect
import random
import re

_MODULES = [
    "argparse",
    "asyncio",
    "collections",
    "concurrent.futures",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "email",
    "enum",
    "fractions",
    "functools",
    "heapq",
    "http.client",
    "http.server",
    "inspect",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "mailbox",
    "multiprocessing",
    "os",
    "pathlib",
    "pickle",
    "queue",
    "random",
    "re",
    "sched",
    "shutil",
    "socket",
    "sqlite3",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "tkinter",
    "typing",
    "unittest",
    "urllib.parse",
    "uuid",
    "wave",
    "xml.dom.minidom",
    "zipfile",
    "zoneinfo",
]

NON_ENGLISH = [
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "La base de données répond en moins de dix millisecondes, même sous charge.",
    "El servidor de inferencia agrupa las peticiones para aprovechar mejor la CPU.",
    "O modelo de linguagem responde com citações dos documentos indexados.",
    "Il sistema di recupero trova i paragrafi più vicini alla domanda.",
    "Модель превращает текст в вектор фиксированной длины.",
    "検索拡張生成はドキュメントから答えを見つけます。",
    "向量数据库存储每个文本块的嵌入。",
    "문서를 업로드하면 색인이 자동으로 생성됩니다.",
    "يقوم الخادم بتجميع الطلبات في دفعات ديناميكية.",
    "השרת מחזיר תשובה עם מקורות.",
    "सर्वर हर अनुरोध को प्राथमिकता के अनुसार संभालता है।",
    "Η αναζήτηση επιστρέφει τα πιο σχετικά αποσπάσματα.",
    "Wyszukiwarka zwraca najbardziej podobne fragmenty tekstu.",
    "Hakemisto päivittyy, kun asiakirja ladataan uudelleen.",
    "Dokumentet indekseras i bakgrunden av en arbetsprocess.",
    "Sunucu, istekleri öncelik sırasına göre işler.",
    "Máy chủ trả về kết quả kèm theo trích dẫn nguồn.",
    "เซิร์ฟเวอร์ประมวลผลคำขอเป็นชุด",
    "Seva inarudisha majibu pamoja na vyanzo vyake.",
]

EMOJI = [
    "🚀",
    "🔥🔥🔥 fast embeddings 🔥🔥🔥",
    "Deployed to prod 🎉✅ no rollback needed 🙏",
    "👩‍💻👨‍💻 pair programming on the retriever 🧠",
    "¯\\_(ツ)_/¯ it works on my machine 💻",
    "🇩🇪🇫🇷🇯🇵 flags are multi-codepoint",
    "Temperature: 23°C ☀️ → 🌧️ later",
    "❤️🧡💛💚💙💜",
]

WHITESPACE = [" ", "   ", "\n", "\t\t", " \n \t \r\n ", "\u00a0\u2003"]
TINY = ["a", "?", "x", "OK", "42", "Triton"]


def paragraphs(limit: int = 2000, min_chars: int = 40) -> list[str]:
    """Distinct prose paragraphs from standard-library docstrings, in a fixed order."""
    seen: set[str] = set()
    out: list[str] = []
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # tkinter may be missing on a slim Python
            continue
        for _, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if callable(obj) or inspect.ismodule(obj) else None
            for para in re.split(r"\n\s*\n", doc or ""):
                text = " ".join(para.split())
                if len(text) >= min_chars and text not in seen and not text.startswith(">>>"):
                    seen.add(text)
                    out.append(text)
                    if len(out) >= limit:
                        return out
    return out


def code_snippets(count: int, seed: int = 7) -> list[str]:
    """Runs of source lines from standard-library modules."""
    rng = random.Random(seed)
    lines = inspect.getsource(importlib.import_module("json.decoder")).splitlines()
    lines += inspect.getsource(importlib.import_module("textwrap")).splitlines()
    out = []
    for _ in range(count):
        start = rng.randrange(len(lines) - 20)
        out.append("\n".join(lines[start : start + rng.randint(1, 20)]))
    return out


def parity_texts(count: int = 240, seed: int = 11) -> list[str]:
    """Varied texts for the fp32 parity gate: 1 to 400+ tokens, every script and shape."""
    rng = random.Random(seed)
    prose = paragraphs(600)
    long = [" ".join(rng.sample(prose, 8)) for _ in range(20)]  # well past 256 tokens
    fixed = NON_ENGLISH + EMOJI + WHITESPACE + TINY + code_snippets(30) + long
    return fixed + rng.sample(prose, max(0, count - len(fixed)))


def known_items(
    queries: int = 1200, corpus: int = 2400, seed: int = 5
) -> tuple[list[str], list[str], list[int]]:
    """(corpus, queries, targets): query i is a sentence cut from paragraph targets[i]."""
    rng = random.Random(seed)
    docs = paragraphs(corpus)
    picked = rng.sample(range(len(docs)), min(queries, len(docs)))
    asked = []
    for i in picked:
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", docs[i]) if len(s) > 20]
        asked.append(rng.choice(sentences) if sentences else docs[i][: len(docs[i]) // 2])
    return docs, asked, picked


def chunks(count: int = 500, seed: int = 3) -> list[str]:
    """RAG-like chunks of real prose: consecutive paragraphs joined to 60..1000 characters."""
    rng = random.Random(seed)
    prose = paragraphs(2400)
    out: list[str] = []
    i = 0
    while len(out) < count:
        target, parts = rng.randint(60, 1000), list[str]()
        while sum(len(p) for p in parts) < target:
            parts.append(prose[i % len(prose)])
            i += 1
        out.append(" ".join(parts)[: target + 200])
    return out
