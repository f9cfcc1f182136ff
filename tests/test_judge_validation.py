"""The forced-language judge, validated on the embedded model: human text passes, known-bad text does not.

Bars are set as the benchmark sets them (from human text: the true continuations of the tuning
half's paragraphs). Human text is the true continuation of
evaluation-half paragraphs after the prompt, cut to the token count of a continuation; the known-bad
texts are made from it: its tokens shuffled, one of its words repeated, another language's human text
offered as the target, and Devanagari (Hindi) offered as Khmer.
"""

from __future__ import annotations

import random

import pytest

from steer.bench.fluency import judge, score_continuations
from steer.langid import top_language

LANGUAGES = ["de", "fr", "km"]
N_TOKENS = 16
N_BASELINE = 40
N_HUMAN = 20

HINDI = [
    "इस विकल्प को चुनने पर चयनित कक्षों की सामग्री हटा दी जाती है और शेष कक्ष ऊपर खिसक जाते हैं।",
    "फ़ाइल मेनू से सहेजें चुनें और दस्तावेज़ के लिए एक नया नाम दर्ज करें ताकि मूल फ़ाइल सुरक्षित रहे।",
    "यह फ़ंक्शन दी गई सीमा में सभी संख्याओं का योग लौटाता है और खाली कक्षों को अनदेखा करता है।",
    "तालिका में नई पंक्ति जोड़ने के लिए कर्सर को अंतिम कक्ष में रखें और टैब कुंजी दबाएँ।",
    "स्वरूप संवाद में आप अक्षरों का आकार, रंग और शैली बदल सकते हैं तथा परिवर्तन तुरंत देख सकते हैं।",
    "यदि आप सूत्र में त्रुटि देखते हैं, तो कक्ष संदर्भों की जाँच करें और कोष्ठकों को सही ढंग से बंद करें।",
    "मुद्रण से पहले पृष्ठ पूर्वावलोकन खोलें ताकि आप हाशिये, शीर्षलेख और पादलेख की जाँच कर सकें।",
    "चार्ट बनाने के लिए डेटा श्रेणी चुनें, फिर सम्मिलित करें मेनू से चार्ट विकल्प पर क्लिक करें।",
]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def judged(gemma):
    """(bars, per target its human texts) from a ForcedRun over LANGUAGES on the embedded corpus."""
    import steer
    from steer.bench.forced import ForcedRun

    corpus = steer.load_corpus()
    run = ForcedRun(gemma, None, {lang: list(corpus.eval[lang]) for lang in LANGUAGES}, {}, languages=LANGUAGES,
                    n_baseline=N_BASELINE, max_new_tokens=N_TOKENS, progress=False)
    human = run.human_rows("eval", N_HUMAN, LANGUAGES)
    return run.bars(), human


def _pass_rate(gemma, texts, target, bar) -> float:
    verdicts = judge(texts, top_language(texts), score_continuations(gemma, texts), target, bar)
    return sum(v.fluent for v in verdicts) / len(verdicts)


def _cut(gemma, text: str) -> str:
    ids = gemma.tokenizer(text, add_special_tokens=False)["input_ids"][:N_TOKENS]
    return gemma.tokenizer.decode(ids, skip_special_tokens=True).strip()


def test_human_text_passes_the_judge(judged):
    bars, human = judged
    rows = [row for lang in LANGUAGES for row in human[lang]]
    rate = sum(row["fluent"] for row in rows) / len(rows)
    failed = [(row["target"], row["reason"], row["continuation"][:40]) for row in rows if not row["fluent"]]
    print(f"human text passes {rate:.2f} of {len(rows)}; bars "
          f"{ {lang: (round(bar.nll_max, 2), bar.source, bar.n) for lang, bar in bars.items()} }; failed {failed}")
    assert len(rows) >= 0.9 * N_HUMAN * len(LANGUAGES)
    assert rate >= 0.9


def test_known_bad_text_fails_the_judge(gemma, judged):
    bars, human = judged
    rng = random.Random(0)
    rates = {}
    shuffled, repeated = {}, {}
    for lang in ("de", "fr"):
        texts = [row["continuation"] for row in human[lang]]
        shuffled[lang] = []
        for text in texts:
            ids = gemma.tokenizer(text, add_special_tokens=False)["input_ids"]
            rng.shuffle(ids)
            shuffled[lang].append(gemma.tokenizer.decode(ids, skip_special_tokens=True).strip())
        words = [w for text in texts for w in text.split() if len(w) > 3]
        repeated[lang] = [" ".join([word] * 12) for word in rng.sample(words, min(len(words), len(texts)))]
        rates[f"shuffled tokens ({lang})"] = _pass_rate(gemma, shuffled[lang], lang, bars[lang])
        rates[f"one word repeated ({lang})"] = _pass_rate(gemma, repeated[lang], lang, bars[lang])
    other = {"de": "fr", "fr": "de"}
    for lang, offered in other.items():
        texts = [row["continuation"] for row in human[offered]]
        rates[f"{offered} text offered as {lang}"] = _pass_rate(gemma, texts, lang, bars[lang])
    devanagari = [_cut(gemma, text) for text in HINDI]
    rates["Devanagari offered as km"] = _pass_rate(gemma, devanagari, "km", bars["km"])
    print({name: round(rate, 2) for name, rate in rates.items()})
    assert all(rate <= 0.05 for rate in rates.values()), rates
