"""The one language table: every language steer knows, with the codes each outside resource uses.

A steer code is ISO 639-1 where one exists (with a region for the LibreOffice variants, e.g.
"pt-br"). For each: the English name (used in prompts), the ISO 15924 script, the suffix of
Debian's `libreoffice-help-*` package (None where Debian ships none), the FLORES-200 config name,
the py3langid label (None where py3langid does not know the language) and whether the language
counts as low-resource for this project's transfer experiments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    code: str
    name: str
    script: str
    debian: str | None
    flores: str | None
    langid: str | None
    low_resource: bool = False


_ROWS = [
    # code     name                    script  debian   flores      langid  low
    ("ar", "Arabic", "Arab", None, "arb_Arab", "ar", False),
    ("ca", "Catalan", "Latn", "ca", "cat_Latn", "ca", False),
    ("cs", "Czech", "Latn", "cs", "ces_Latn", "cs", False),
    ("da", "Danish", "Latn", "da", "dan_Latn", "da", False),
    ("de", "German", "Latn", "de", "deu_Latn", "de", False),
    ("dz", "Dzongkha", "Tibt", "dz", "dzo_Tibt", "dz", True),
    ("el", "Greek", "Grek", "el", "ell_Grek", "el", False),
    ("en", "English", "Latn", "en-us", "eng_Latn", "en", False),
    ("en-gb", "British English", "Latn", "en-gb", None, "en", False),
    ("es", "Spanish", "Latn", "es", "spa_Latn", "es", False),
    ("et", "Estonian", "Latn", "et", "est_Latn", "et", False),
    ("eu", "Basque", "Latn", "eu", "eus_Latn", "eu", True),
    ("fi", "Finnish", "Latn", "fi", "fin_Latn", "fi", False),
    ("fr", "French", "Latn", "fr", "fra_Latn", "fr", False),
    ("gl", "Galician", "Latn", "gl", "glg_Latn", "gl", False),
    ("hi", "Hindi", "Deva", "hi", "hin_Deva", "hi", False),
    ("hu", "Hungarian", "Latn", "hu", "hun_Latn", "hu", False),
    ("id", "Indonesian", "Latn", "id", "ind_Latn", "id", False),
    ("it", "Italian", "Latn", "it", "ita_Latn", "it", False),
    ("ja", "Japanese", "Jpan", "ja", "jpn_Jpan", "ja", False),
    ("km", "Khmer", "Khmr", "km", "khm_Khmr", "km", True),
    ("ko", "Korean", "Hang", "ko", "kor_Hang", "ko", False),
    ("nl", "Dutch", "Latn", "nl", "nld_Latn", "nl", False),
    ("om", "Oromo", "Latn", "om", "gaz_Latn", "om", True),
    ("pl", "Polish", "Latn", "pl", "pol_Latn", "pl", False),
    ("pt", "Portuguese", "Latn", "pt", "por_Latn", "pt", False),
    ("pt-br", "Brazilian Portuguese", "Latn", "pt-br", None, "pt", False),
    ("ru", "Russian", "Cyrl", "ru", "rus_Cyrl", "ru", False),
    ("sk", "Slovak", "Latn", "sk", "slk_Latn", "sk", False),
    ("sl", "Slovenian", "Latn", "sl", "slv_Latn", "sl", False),
    ("sv", "Swedish", "Latn", "sv", "swe_Latn", "sv", False),
    ("sw", "Swahili", "Latn", None, "swh_Latn", "sw", True),
    ("tr", "Turkish", "Latn", "tr", "tur_Latn", "tr", False),
    ("uk", "Ukrainian", "Cyrl", None, "ukr_Cyrl", "uk", False),
    ("vi", "Vietnamese", "Latn", "vi", "vie_Latn", "vi", False),
    ("zh", "Chinese", "Hans", "zh-cn", "zho_Hans", "zh", False),
    ("zh-tw", "Traditional Chinese", "Hant", "zh-tw", "zho_Hant", "zh", False),
]

LANGUAGES: dict[str, Language] = {row[0]: Language(*row) for row in _ROWS}

# The embedded corpus' default languages: seven high-resource, three low-resource.
DEFAULT_LANGUAGES = ["en", "de", "fr", "es", "ru", "ja", "zh", "eu", "om", "km"]
LOW_RESOURCE = [code for code in DEFAULT_LANGUAGES if LANGUAGES[code].low_resource]
# The translations Debian ships as libreoffice-help-<suffix>, in steer codes.
LIBREOFFICE_LANGUAGES = [code for code, lang in LANGUAGES.items() if lang.debian is not None]


def language(code: str) -> Language:
    """The table's row for `code`; a clear error for a code steer does not know."""
    try:
        return LANGUAGES[code.strip().lower().replace("_", "-") if isinstance(code, str) else code]
    except KeyError:
        raise ValueError(f"unknown language code '{code}'; steer knows {', '.join(sorted(LANGUAGES))}") from None


def language_name(code: str) -> str:
    """The English name ("eu" -> "Basque"); an unknown code is returned as it is."""
    row = LANGUAGES.get(code)
    return row.name if row else code


Lang = str  # the annotation of a config field that holds a language code (checked as one by steer.bench.schema)

# A language code as steer accepts it: BCP-47-like, a primary subtag of 2-3 letters and optional subtags of
# 1-8 letters or digits, joined by "-" (or "_", read as "-"). Lower case once normalised.
_CODE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,8})*")


def is_code(text: str) -> bool:
    """Whether `text` is already a normalised language code (safe as a file name)."""
    return isinstance(text, str) and _CODE.fullmatch(text) is not None


def normalise_code(code, *, what: str = "language code") -> str:
    """The one validator of language codes: surrounding whitespace dropped, lower case, "_" read as "-";
    anything but a BCP-47-like code (e.g. "README", "../x", "e n", "") is a clear error naming `what`."""
    if not isinstance(code, str):
        raise ValueError(f"{what}: a language code must be a string, got {code!r}")
    normal = code.strip().lower().replace("_", "-")
    if not _CODE.fullmatch(normal):
        raise ValueError(f"{what}: {code!r} is not a language code (2-3 letters, optional -subtags of letters or "
                         "digits, e.g. en, pt-br, zh-tw)")
    return normal


def normalise_codes(codes, *, what: str = "languages") -> list[str]:
    """Each code normalised (`normalise_code`); two that normalise alike (e.g. "en" and "EN ") are an error."""
    if isinstance(codes, str):
        codes = [codes]
    normal = [normalise_code(code, what=what) for code in codes]
    seen: dict[str, object] = {}
    for given, code in zip(codes, normal):
        if code in seen:
            twice = f"'{code}' is given twice" if seen[code] == given else \
                f"{seen[code]!r} and {given!r} are the same language ('{code}')"
            raise ValueError(f"{what}: {twice}; give each language once")
        seen[code] = given
    return normal
