"""The bundled prompt templates, ``<name>.txt`` (package data, read by :mod:`trainers.prompt_templates`)."""
