"""The documentation tooling (API reference pages, results tables in the docs, field docs): not part of
the installed package."""
