"""Prompt templates and their rendering by `CL3MRecProcessor`: loading, history truncation, placeholders, the
cacheable prefix, and byte-for-byte pins of the rendered text."""

import pytest

from modeling_cl3mrec import CL3MRecProcessor
from modeling_cl3mrec.processing_cl3mrec import HISTORY_TOKEN, ITEM_TOKEN, USER_TOKEN
from trainers.prompt_templates import load_template

ROW = {"history_titles": [f"Movie {i} (199{i})" for i in range(12)], "title": "Alien (1979)"}
PIN_ROW = {"history_titles": ["Toy Story (1995)", "Heat (1995)", "Fargo (1996)"], "title": "Alien (1979)"}
QUESTION = "#Question: A user has given high ratings to the following "
ANSWER = 'Answer with "Yes" or "No". \n#Answer:'


@pytest.fixture(scope="module")
def render(tiny_tokenizer):
    """`render(template, row, **processor_options) -> str` through a `CL3MRecProcessor`."""

    def render(template, row, **options):
        return CL3MRecProcessor(tiny_tokenizer, template=template, **options).render(row)

    return render


@pytest.mark.parametrize(
    "name, options, expected",
    [
        (
            "collm_ml1m",
            {"max_history": 2, "tokens_per_entity": 2, "use_history_embeddings": True},
            f"{QUESTION}movies: Heat (1995) <|hist_emb|><|hist_emb|>, Fargo (1996) <|hist_emb|><|hist_emb|>. "
            "Additionally, we have information about the user's preferences encoded in the feature "
            "<|user_emb|><|user_emb|>. Using all available information, make a prediction about whether the user "
            f"would enjoy the movie titled Alien (1979) with the feature <|item_emb|><|item_emb|>? {ANSWER}",
        ),
        (
            "tallrec_ml1m",
            {"max_history": 10},
            f"{QUESTION}movies: Toy Story (1995), Heat (1995), Fargo (1996). Using all available information, make "
            f"a prediction about whether the user would enjoy the movie titled Alien (1979)? {ANSWER}",
        ),
        (
            "collm_book",
            {"max_history": 0},
            f"{QUESTION}books: . Additionally, we have information about the user's preferences encoded in the "
            "feature <|user_emb|>. Using all available information, make a prediction about whether the user would "
            f"enjoy the book titled Alien (1979) with the feature <|item_emb|>? {ANSWER}",
        ),
        (
            "tallrec_book",
            {"max_history": 1},
            f"{QUESTION}books: Fargo (1996). Using all available information, make a prediction about whether the "
            f"user would enjoy the book titled Alien (1979)? {ANSWER}",
        ),
    ],
)
def test_rendering_is_pinned_byte_for_byte(render, name, options, expected):
    """The exact text training has always used (rendered by the former `data_scripts.prompts`)."""
    assert render(load_template(name), PIN_ROW, **options) == expected


def test_bundled_collm_template_matches_collm_wording(render):
    prompt = render(load_template("collm_ml1m"), ROW)
    history = ", ".join(f"Movie {i} (199{i})" for i in range(2, 12))  # the 10 most recent, oldest first
    assert prompt == (
        f"#Question: A user has given high ratings to the following movies: {history}. Additionally, we have "
        f"information about the user's preferences encoded in the feature {USER_TOKEN}. Using all available "
        "information, make a prediction about whether the user would enjoy the movie titled Alien (1979) with the "
        f'feature {ITEM_TOKEN}? Answer with "Yes" or "No". \n#Answer:'
    )


@pytest.mark.parametrize("name", ["collm_ml1m", "tallrec_ml1m", "collm_book", "tallrec_book"])
def test_all_bundled_templates_load(name):
    template = load_template(name)
    assert template.endswith("#Answer:") and "{title}" in template
    assert ("{user}" in template) == name.startswith("collm")
    assert ("books" in template) == name.endswith("book")


def test_truncation_tokens_and_history_placeholders(render):
    template = load_template("tallrec_ml1m")
    prompt = render(template, ROW, max_history=3)
    assert "movies: Movie 9 (1999), Movie 10 (19910), Movie 11 (19911). Using" in prompt
    assert USER_TOKEN not in prompt
    empty = render(template, {"history_titles": [], "title": "X"}, max_history=3)
    assert "movies: . Using" in empty
    assert "movies: . Using" in render(template, ROW, max_history=0)
    short = render(template, {"history_titles": ["A (1990)", "B (1991)"], "title": "X"}, max_history=10)
    assert "movies: A (1990), B (1991). Using" in short  # a history shorter than max_history is kept whole
    options = {"max_history": 2, "tokens_per_entity": 3, "use_history_embeddings": True}
    with_tokens = render(load_template("collm_ml1m"), ROW, **options)
    assert f"Movie 10 (19910) {HISTORY_TOKEN * 3}, Movie 11 (19911) {HISTORY_TOKEN * 3}." in with_tokens
    assert with_tokens.count(USER_TOKEN) == 3 and with_tokens.count(ITEM_TOKEN) == 3
    assert with_tokens.count(HISTORY_TOKEN) == 6


def test_braces_in_titles_are_safe(render):
    row = {"history_titles": ["{title} {user}"], "title": "A {item} B"}
    prompt = render("H: {history} U: {user} T: {title} I: {item}", row)
    assert prompt == f"H: {{title}} {{user}} U: {USER_TOKEN} T: A {{item}} B I: {ITEM_TOKEN}"


def test_split_prompt_prefix_is_user_only(tiny_tokenizer, render):
    template = load_template("collm_ml1m")
    processor = CL3MRecProcessor(tiny_tokenizer, template=template, max_history=4)
    prefix, suffix = processor.split_prompt(ROW)
    assert prefix + suffix == render(template, ROW, max_history=4)
    assert prefix.endswith("the movie titled ") and suffix.startswith("Alien (1979) with the feature")
    other_prefix, _ = processor.split_prompt(dict(ROW, title="Heat (1995)"))
    assert other_prefix == prefix
    literal = CL3MRecProcessor(tiny_tokenizer, template="{{literal}} {history} / {item} then {title}", max_history=1)
    prefix, suffix = literal.split_prompt(ROW)
    assert prefix == "{literal} Movie 11 (19911) / " and suffix == f"{ITEM_TOKEN} then Alien (1979)"


@pytest.mark.parametrize(
    "template, message",
    [
        ("{title} {history}", r"puts \{history\} after \{title\}"),
        ("{history} {item} {user} {title}", r"puts \{user\} after \{item\}"),
        ("{history} {genre} {title}", r"field \{genre\} is unknown"),
        ("{history}", r"no \{title\} field"),
        ("{title:>10}", "format spec"),
    ],
)
def test_bad_templates(render, template, message):
    with pytest.raises(ValueError, match=message):
        render(template, ROW)


def test_bad_processor_settings(tiny_tokenizer):
    with pytest.raises(ValueError, match="use_history_embeddings needs a template with CF placeholders"):
        CL3MRecProcessor(tiny_tokenizer, template="{history} {title}", use_history_embeddings=True)
    with pytest.raises(ValueError, match="max_history >= 0"):
        CL3MRecProcessor(tiny_tokenizer, template="{title}", max_history=-1)
    with pytest.raises(ValueError, match="padding_side"):
        CL3MRecProcessor(tiny_tokenizer, template="{title}", padding_side="middle")


def test_load_template_by_path_and_errors(tmp_path, render):
    path = tmp_path / "mine.txt"
    path.write_text("Likes: {history}. Would like {title}?\n")
    assert load_template(str(path)) == "Likes: {history}. Would like {title}?"
    with pytest.raises(FileNotFoundError, match="bundled templates: .*collm_ml1m"):
        load_template("no_such_template")
    with pytest.raises(ValueError, match="missing field"):
        render("{title}", {"title": "x"})


def test_bundled_templates_are_package_data_and_old_config_paths_still_find_them(tmp_path, monkeypatch):
    from importlib.resources import files

    from trainers.prompt_templates import bundled_templates

    assert bundled_templates() == ["collm_book", "collm_ml1m", "tallrec_book", "tallrec_ml1m"]
    packaged = files("trainers.prompts").joinpath("collm_ml1m.txt").read_text(encoding="utf-8")
    assert load_template("collm_ml1m") == packaged.removesuffix("\n")
    monkeypatch.chdir(tmp_path)  # no configs/prompts/collm_ml1m.txt here: the bundled copy answers
    assert load_template("configs/prompts/collm_ml1m.txt") == load_template("collm_ml1m")
    own = tmp_path / "configs" / "prompts" / "collm_ml1m.txt"
    own.parent.mkdir(parents=True)
    own.write_text("Mine: {history}. {title}?\n")  # a user's own file at that path wins
    assert load_template("configs/prompts/collm_ml1m.txt") == "Mine: {history}. {title}?"
    with pytest.raises(FileNotFoundError, match="bundled templates"):
        load_template("configs/prompts/not_bundled.txt")
