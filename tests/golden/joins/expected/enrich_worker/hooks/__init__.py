"""User hook modules, copied verbatim from beside joins.sdl."""
