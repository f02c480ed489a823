"""User hook modules, copied verbatim from beside aggregates.sdl."""
