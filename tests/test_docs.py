"""The docs say what the code does: the config reference is the generator's output."""

from ftft_ds.cli.config_reference import field_docstrings, reference_markdown, sections

from .helpers import REPO


def test_the_config_reference_is_what_the_generator_writes():
    page = (REPO / "docs" / "config.md").read_text()
    assert page == reference_markdown(), "docs/config.md is stale: run `ftft config-reference > docs/config.md`"


def test_every_config_field_has_a_docstring():
    """A field without one would be a blank row of the reference."""
    import dataclasses

    missing = [
        f"{cls.__name__}.{field.name}"
        for _, cls in sections()
        for field in dataclasses.fields(cls)
        if field.init and field.name not in field_docstrings(cls)
    ]
    assert missing == []
