"""Reading the ingredient list out of a model's answer.

Our fine-tuned models answer ``rice, egg, carrot``, but the baselines and the food LMMs we compare with write
markdown (``**Ingredients:**``, bullets, numbered lists, tables), chatty prose ("In the image, there is a plate of
food with rice, a fried egg, and some vegetables such as carrots and peas."), quantities ("200 g rice", "a pinch of
salt"), notes ("rice (steamed)") and reasoning (``<think>...</think>``). Scoring that text as it stands would punish
a model for its wording rather than for what it recognised, so the parser reads it the way a person would:

1. :func:`final_answer` keeps only the answer: what follows ``</think>``, the inside of ``<answer>...</answer>``.
2. The text is read line by line. If it has list lines (bullets, numbers, table rows) they are the answer and the
   prose around them is commentary; otherwise each sentence is read for the list that follows a cue ("contains",
   "I can see", "topped with", "The ingredients are"), and a sentence that is itself a plain list is taken whole.
3. Each list is split on the separators models use (``,`` ``;`` ``&`` "and" "with"), and each piece loses its
   quantity and unit, its parenthetical note and any trailing prose before it is normalised.

Names come back unique, in the answer's order (the trained answers list the heaviest ingredient first).
:func:`rode_lightning.conventions.normalize_ingredient` itself is unchanged by all this: it also builds the training
targets and the dataset readers' keys, so quantity stripping lives here, in the parsing step.
"""

from __future__ import annotations

import re

from rode_lightning.conventions import normalize_ingredient

# --------------------------------------------------------------------------------------------------------------------
# Names


# --------------------------------------------------------------------------------------------------------------------
# The answer part of the text

_REASONING_END = re.compile(r"</think\s*>", re.IGNORECASE)
_REASONING_START = re.compile(r"<think\s*>", re.IGNORECASE)
_ANSWER_TAG = re.compile(r"<answer\s*>(?P<answer>.*?)(?:</answer\s*>|$)", re.IGNORECASE | re.DOTALL)
# Chat-template tokens a decoder may leave in: </s>, <|im_end|>, stray <answer>/<think> tags.
_SPECIAL_TOKEN = re.compile(r"<\|[^|<>]{0,40}\|>|</?(?:s|answer|think)\s*>", re.IGNORECASE)


def final_answer(text: str) -> str:
    """The answer in a model's text, without its reasoning: what follows the last ``</think>``, and of that the
    inside of ``<answer>...</answer>`` where there is one. Reasoning that never closed and no answer tag (the
    generation ran out of tokens inside ``<think>``) is no answer, so only what came before it is kept."""
    if not isinstance(text, str):
        return ""
    ends = list(_REASONING_END.finditer(text))
    if ends:
        text = text[ends[-1].end():]
    tagged = _ANSWER_TAG.search(text)
    if tagged:
        text = tagged.group("answer")
    elif not ends and (start := _REASONING_START.search(text)):
        text = text[:start.start()]
    return _SPECIAL_TOKEN.sub(" ", text)


# --------------------------------------------------------------------------------------------------------------------
# Lines: tables, headings, bullets, labels

_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")  # |---|:--:|
_INGREDIENT_COLUMN = re.compile(r"ingredient|item|food|component|name", re.IGNORECASE)
_HEADING = re.compile(r"^\s*#{1,6}\s*(?P<text>.*)$")
_BULLET = re.compile(r"^\s*(?:[-*+\u2022\u00b7\u2013\u25aa\u25e6\u2023]|\d{1,2}[.)])\s+(?P<text>.*)$")
_BOLD_LABEL = re.compile(r"^\s*\*\*(?P<label>[^*]+)\*\*(?P<after>.*)$")
_AFTER_BOLD_LABEL = re.compile(r"^\s*(?::|[-\u2013\u2014](?=\s))\s*(?P<rest>.*)$")  # "**Rice**: ..", "**Rice** - .."
_COLON_LABEL = re.compile(r"^(?P<label>[^:]+):(?P<rest>.*)$")
_DASH_LABEL = re.compile(r"^(?P<label>.+?)\s+[-\u2013\u2014]\s+(?P<rest>.*)$")  # "Rice - steamed" (bullets only)
_EMPHASIS = re.compile(r"[*_`\"\u201c\u201d]")

# A heading or label that opens a part of the answer which is not the ingredient list.
_OTHER_SECTION = re.compile(r"\b(?:instructions?|directions?|steps?|method|preparation|recipe|nutrition(?:al)?"
                            r"|calories|how\s+to|cooking|serving\s+suggestions?)\b", re.IGNORECASE)
# A label whose text is the list ("**Ingredients:** rice, egg", "Here is what I can see: ...").
_LEAD_IN_LABEL = re.compile(r"\b(?:ingredients?|components?|items?|contents?|contains?|containing|includes?"
                            r"|including|see|seen|spot|identify|identified|visible|here|following|list|answer"
                            r"|consists?|made|composed|features?|has|have|shows?|there)\b", re.IGNORECASE)
# A label naming a kind of ingredient, whose text lists the ingredients ("**Vegetables:** carrots, peas"); any
# other short label is itself the ingredient and its text a description ("**Rice**: steamed white rice").
_CATEGORY_LABEL = re.compile(
    r"(?:(?:main|other|additional|possible|key|primary|secondary|optional|fresh)\s+)*"
    r"(?:protein|meat|seafood|vegetable|veggie|veg|grain|carb|carbohydrate|starch|base|sauce|dressing|seasoning"
    r"|spice|herb|condiment|fruit|dairy|topping|garnish|side|filling|aromatic|legume|accompaniment|extra|other)")
# Labels whose text is about the dish, not its ingredients.
_IGNORED_LABEL = re.compile(r"\b(?:dish|name|cuisine|category|type|note|disclaimer|tip|summary|description"
                            r"|origin|taste|flavou?r|texture)\b")


def _lines(text: str) -> list[tuple[str, str]]:
    """The answer's lines as ``(kind, text)``, kind ``heading``, ``item`` (a bullet or a table cell) or ``line``;
    a markdown table becomes one item per row, from its ingredient column (the first column if none is named)."""
    lines: list[tuple[str, str]] = []
    table: list[str] = []
    for line in [*text.splitlines(), ""]:  # the empty line ends a table on the last line
        if line.lstrip().startswith("|"):
            table.append(line)
            continue
        if table:
            lines.extend(("item", cell) for cell in _table_cells(table))
            table = []
        if not line.strip():
            continue
        heading, bullet = _HEADING.match(line), _BULLET.match(line)
        if heading:
            lines.append(("heading", heading.group("text")))
        elif bullet:
            lines.append(("item", bullet.group("text")))
        else:
            lines.append(("line", line))
    return lines


def _table_cells(rows: list[str]) -> list[str]:
    column = 0
    if len(rows) > 1 and _TABLE_RULE.match(rows[1]):  # a header row names the columns
        header = rows[0].strip().strip("|").split("|")
        column = next((index for index, cell in enumerate(header) if _INGREDIENT_COLUMN.search(cell)), 0)
        rows = rows[2:]
    cells = []
    for row in rows:
        row_cells = row.strip().strip("|").split("|")
        if not _TABLE_RULE.match(row) and column < len(row_cells):
            cells.append(row_cells[column])
    return cells


def _split_label(text: str, dash: bool) -> tuple[str, str] | None:
    """``(label, text)`` of a labelled line ("**Rice**: steamed", "Ingredients: rice"), or None."""
    bold = _BOLD_LABEL.match(text)
    if bold:
        label = bold.group("label").strip()
        if label.endswith(":"):
            return label[:-1], bold.group("after")
        after = _AFTER_BOLD_LABEL.match(bold.group("after"))
        return (label, after.group("rest")) if after else None
    for pattern in (_COLON_LABEL, _DASH_LABEL) if dash else (_COLON_LABEL,):
        match = pattern.match(_EMPHASIS.sub(" ", text))
        if match:
            return match.group("label"), match.group("rest")
    return None


# --------------------------------------------------------------------------------------------------------------------
# Sentences: where in prose the list is

# A cue after which a sentence lists ingredients. "ingredients ... are" may skip a few words ("The main ingredients
# I can see in this dish are ...").
_LIST_CUE = re.compile(
    r"\b(?:(?:ingredients?|components?|items?)(?:\s+[\w']+){0,6}?\s+(?:are|is|include|includes|would\s+be"
    r"|appear\s+to\s+be|seem\s+to\s+be)"
    r"|contain(?:s|ing)?|include[sd]?|consist(?:s|ing)?\s+of|(?:made|composed|prepared)\s+(?:up\s+)?(?:of|with|from)"
    r"|features?|featuring|comprises?|shows?|showing|depicts?|depicting|displays?|has|have|having"
    r"|(?:i|we|you)\s+(?:can\s+)?(?:also\s+)?(?:see|spot|identify|notice|make\s+out)|can\s+be\s+seen"
    r"|there\s+(?:is|are|(?:might|may|could)\s+(?:also\s+)?be|appears?\s+to\s+be|seems?\s+to\s+be)"
    r"|(?:topped|garnished|served|accompanied|paired|sprinkled|drizzled|filled|stuffed|loaded|mixed|tossed"
    r"|cooked|made|prepared)\s+(?:up\s+)?with)\b",
    re.IGNORECASE,
)
# Words that make a sentence prose rather than a bare list ("These ingredients are combined to create ...").
_PROSE_WORD = re.compile(
    r"\b(?:i|i'm|i've|we|you|it|its|it's|this|these|that|those|they|is|are|was|were|be|been|am|appears?|seems?"
    r"|looks?|could|may|might|will|would|should|image|picture|photo|dish|meal|food|plate|enjoy|hope|help|let"
    r"|here|please|sure|however|typically|usually|combined|create)\b",
    re.IGNORECASE,
)
_WITH = re.compile(r"\bwith\b", re.IGNORECASE)
# What opens a sentence's subject or an adverbial rather than a list: "The pizza has ...", "In the bowl there are
# ...", "Additionally, there might be ...".
_SUBJECT = re.compile(r"^\s*(?:the|this|these|that|those|it|there|in|on|at|for|as|when|if|based|from|overall|looking"
                      r"|additionally|moreover|furthermore|also|finally|lastly|besides|then|so|now)\b", re.IGNORECASE)
# The list before its cue: "Rice, egg and carrot are the main ingredients."
_LIST_BEFORE_CUE = re.compile(r"^(?P<list>.+?)\s+(?:are|is|seem\s+to\s+be|appear\s+to\s+be)\s+(?:the\s+|some\s+of"
                              r"\s+the\s+)?(?:\w+\s+)?(?:ingredients?|components?)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Dots that end no sentence: "e.g." and "incl." introduce examples, "i.e." and "approx." can go.
_EXAMPLE_ABBREVIATION = re.compile(r"\b(?:e\.g|incl)\.,?", re.IGNORECASE)
_ABBREVIATION = re.compile(r"\b(?:i\.e|approx)\.,?", re.IGNORECASE)


def _sentence_lists(text: str, item: bool) -> list[tuple[str, bool]]:
    """The lists in some text as ``(text, prose)``: ``prose`` lists may carry trailing prose to cut off. In a
    bullet (``item``) the text is a list entry even without a cue; in a prose sentence it must look like a list."""
    text = _ABBREVIATION.sub(" ", _EXAMPLE_ABBREVIATION.sub(" such as ", text))
    lists: list[tuple[str, bool]] = []
    for sentence in _SENTENCE_END.split(text):
        cues = list(_LIST_CUE.finditer(sentence))
        if (before_cue := _LIST_BEFORE_CUE.match(sentence)) is not None:
            lists.append((before_cue.group("list"), False))
        elif cues:
            before = sentence[:cues[0].start()]
            if not _PROSE_WORD.search(before) and not _SUBJECT.match(before):  # "Rice topped with ..."
                lists.append((before, False))
            ends = [cue.start() for cue in cues[1:]] + [len(sentence)]
            lists.extend((sentence[cue.end():end], True) for cue, end in zip(cues, ends))
        elif item:
            lists.append((sentence, True))
        elif not _PROSE_WORD.search(sentence):
            lists.append((sentence, False))
        elif (with_ := _WITH.search(sentence)) is not None:  # "This looks like a Caesar salad with ..."
            lists.append((sentence[with_.end():], True))
    return lists


# --------------------------------------------------------------------------------------------------------------------
# Pieces: one ingredient each

_SUCH_AS = re.compile(r"\(\s*(?:such\s+as|including|like|for\s+example)\b"
                      r"|\b(?:such\s+as|including|for\s+example|namely|especially|particularly)\b", re.IGNORECASE)
_EXAMPLES = "\x00"  # stands for "such as": the general name before it gives way to the examples after it
_PARENTHETICAL = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
# The separators of the trained format ("," ";" "&" "and" "with", a bullet or a number inside a line), and the
# longer conjunctions of prose.
_PIECE_SEPARATOR = re.compile(r",|;|&|\u2022|\b(?:along|together)\s+with\b|\bas\s+well\s+as\b|\bplus\b|\band\b"
                              r"|\bwith\b|(?:^|\s)\d+[.)]\s", re.IGNORECASE)
# Trailing words that are never part of a name, cut in every answer.
_SERVING_NOTE = re.compile(r"\b(?:(?:for|as)\s+(?:a\s+)?(?:garnish|decoration)|on\s+top|to\s+taste|on\s+the\s+side"
                           r"|if\s+desired|optional(?:ly)?)\b.*$", re.IGNORECASE)
# Where prose takes over from a name: "broccoli florets, which add crunch", "a fried egg in the centre". A clause
# word may open a piece that is all prose ("which serves as the base"); the other words describe a name that comes
# first ("cooked rice" is a name, "rice cooked in broth" is rice).
_CLAUSE_WORDS = (r"which|that|who|where|while|whose|being|is|are|was|were|has|have|seems?|appears?|looks?|giving"
                 r"|adding|providing|making|creating|but|however|although|though|except|it|they|this|these|there")
_PROSE_HEAD = re.compile(rf"^(?:{_CLAUSE_WORDS})\b", re.IGNORECASE)
_PROSE_TAIL = re.compile(
    rf"\s\b(?:{_CLAUSE_WORDS}|cooked|served|used|placed|arranged|sprinkled|drizzled|garnished|topped|mixed|tossed"
    r"|layered|visible|present|in|on|at|over|under|inside|into|from|for|to|as|without|alongside|next|around|near"
    r"|underneath|beneath|atop)\b.*$",
    re.IGNORECASE,
)
_NEGATED = re.compile(r"^\s*(?:no|not|without|neither|nor|free\s+of)\b", re.IGNORECASE)

# Quantities before a name: "200 g", "1/2 cup", "1 1/2 cups", "½ cup", "2-3", "a pinch of", "two", "some".
_FRACTION_CHAR = r"[\u00bc-\u00be\u2150-\u215e]"  # ½ ¼ ¾ ⅓ ...
_NUMERAL = rf"(?:\d+(?:[.,]\d+)?(?:\s*/\s*\d+)?(?:\s+\d+\s*/\s*\d+)?\s*{_FRACTION_CHAR}?|{_FRACTION_CHAR})"
_AMOUNT = rf"{_NUMERAL}(?:\s*(?:-|\u2013|to)\s*{_NUMERAL})?"
_APPROXIMATELY = r"(?:about|around|approximately|roughly|nearly|almost|~|\u2248|at\s+least|up\s+to)\s*"
_COUNT_WORD = (r"(?:a|an|the|one|two|three|four|five|six|seven|eight|nine|ten|twelve|dozen|half|quarter|some|several"
               r"|few|couple|many|various|assorted|additional|more|also|other|lots?\s+of|plenty\s+of|a\s+lot\s+of"
               r"|a\s+little|a\s+bit\s+of|any|possibly|probably|likely|perhaps|maybe|optionally)\b")
_SIZE_WORD = (r"(?:small|medium|large|big|generous|heaping|heaped|level|whole|thin|thick|delicious|tasty|hearty"
              r"|healthy|nice|colou?rful|beautiful)\s+")
_UNIT = (r"(?:g|gr|grams?|kg|kilograms?|mg|oz|ounces?|lbs?|pounds?|ml|millilit(?:er|re)s?|l|lit(?:er|re)s?|cups?"
         r"|tbsps?|tablespoons?|tsps?|teaspoons?|pinch(?:es)?|dash(?:es)?|handfuls?|slices?|pieces?|cloves?|cans?"
         r"|jars?|bunch(?:es)?|sprigs?|sticks?|heads?|strips?|fillets?|scoops?|servings?|portions?|drizzles?"
         r"|splash(?:es)?|sprinkles?|sprinkling|knobs?|dollops?|spoonfuls?|cubes?|chunks?|wedges?|rings?|leaves"
         r"|leaf|stalks?|ears?|plates?|bowls?|platters?|beds?|piles?|heaps?|layers?|sides?|glass(?:es)?|bottles?"
         r"|packs?|packets?|bags?|boxes?|mix(?:es)?|mixture|medley|blend|assortment|variety|combination|selection"
         r"|couple|dozen|bits?|drops?|amounts?)\b\.?")
_QUANTITY_PREFIX = re.compile(
    rf"^\s*(?:{_APPROXIMATELY})?(?:(?:{_AMOUNT}|{_COUNT_WORD})\s*(?:{_SIZE_WORD})*(?:{_UNIT}\s*(?:of\s+)?)?"
    rf"|{_UNIT}\s+of\s+)",
    re.IGNORECASE,
)
_DESCRIPTION = re.compile(r"[a-z]*[^e\s]ed")  # one participle alone: "cooked", "sliced" (not "seed")
_GENERIC = {"food", "dish", "meal", "ingredient", "item", "thing", "stuff", "etc", "other", "more", "garnish",
            "topping", "image", "picture", "photo", "plate", "bowl", "something"}
_FILLER = {"is", "are", "it", "also", "and", "with", "then", "there", "the", "a", "an", "which", "that", "this",
           "these", "those", "its", "they", "some", "of", "or", "in", "on"}


def _names(text: str, prose: bool) -> list[str]:
    """The normalised names in one list; ``prose`` lists also lose the prose that follows a name."""
    text = _SUCH_AS.sub(f" {_EXAMPLES} ", text)
    previous = None
    while previous != text:  # nested notes: "rice (steamed (white))"
        previous, text = text, _PARENTHETICAL.sub(" ", text)
    names: list[str] = []
    for piece in _PIECE_SEPARATOR.split(text):
        general, marker, examples = piece.rpartition(_EXAMPLES)
        if marker and not general.strip() and names:
            names.pop()  # "vegetables, such as carrots": the examples replace the general name
        piece = _EMPHASIS.sub(" ", examples).strip()
        piece = _SERVING_NOTE.sub("", piece)
        if prose and _PROSE_HEAD.match(piece):
            continue
        if prose:
            piece = _PROSE_TAIL.sub("", piece)
        if _NEGATED.match(piece):
            continue
        for _ in range(4):  # "about 2 large slices of", "also some"
            stripped = _QUANTITY_PREFIX.sub("", piece, count=1)
            if stripped == piece or not normalize_ingredient(stripped):
                break  # "2 cups" alone stays "cup" (as before) rather than vanish
            piece = stripped
        name = normalize_ingredient(piece)
        if prose and _DESCRIPTION.fullmatch(name):
            continue  # "grilled salmon, cooked to perfection"
        if name and name not in _GENERIC and not (prose and set(name.split()) <= _FILLER):
            names.append(name)
    return names


# --------------------------------------------------------------------------------------------------------------------


def parse_ingredients(text: str) -> list[str]:
    """The normalised ingredient names in a model's answer, unique and in the answer's order.

    Reads the trained format (``rice, egg, carrot``), markdown (bold lead-ins, headings, bullets, numbered lists,
    tables), prose with its lead-ins and trailing commentary, quantities and units ("200 g rice" -> ``rice``, "a
    pinch of salt" -> ``salt``), parenthetical notes, and ``<think>`` reasoning (only the answer after it counts).
    Never raises: text it cannot read, or a bug in reading it, gives an empty list (one answer lost, not a run).
    """
    try:
        return _parse_ingredients(final_answer(text))
    except Exception:  # a parser bug must cost one answer, never an evaluation run
        return []


def _parse_ingredients(text: str) -> list[str]:
    lines = _lines(text)
    has_list = any(kind == "item" for kind, _ in lines)
    lists: list[tuple[str, bool]] = []
    for kind, line in lines:
        label = _split_label(line, dash=kind == "item") if kind != "heading" else None
        opens_section = kind == "heading" or (label is not None and not label[1].strip())
        if opens_section and _OTHER_SECTION.search(label[0] if label else line) and "ingredient" not in line.lower():
            if lists:
                break  # "## Instructions" after the list: the rest is not about ingredients
            continue
        if kind == "heading":
            continue
        if label is not None:
            labelled = _labelled(*label, bullet=kind == "item")
            if labelled is not None:
                lists.extend(labelled)
                continue
        if kind == "item":
            lists.extend(_sentence_lists(line, item=True))
        elif not has_list:  # around a list, unlabelled prose is commentary
            lists.extend(_sentence_lists(_EMPHASIS.sub(" ", line), item=False))
    names: dict[str, None] = {}  # an ordered set
    for list_text, prose in lists:
        names.update(dict.fromkeys(_names(list_text, prose)))
    return list(names)


def _labelled(label: str, rest: str, bullet: bool) -> list[tuple[str, bool]] | None:
    """The lists of a labelled line; None where the label is no label but the start of a sentence."""
    words = normalize_ingredient(label)
    rest = _EMPHASIS.sub(" ", rest)
    if _LEAD_IN_LABEL.search(label) or _CATEGORY_LABEL.fullmatch(words):
        return _sentence_lists(rest, item=False)
    if _IGNORED_LABEL.search(words):
        return []
    if not bullet and _PIECE_SEPARATOR.search(rest) and not _PROSE_WORD.search(rest):
        return _sentence_lists(rest, item=False)  # "Chicken tikka masala: chicken, tomato, cream": a dish name
    if 0 < len(words.split()) <= 4 and not _PROSE_WORD.search(label):
        return [(label, False)]  # "**Rice**: steamed white rice": the label is the ingredient
    return None
