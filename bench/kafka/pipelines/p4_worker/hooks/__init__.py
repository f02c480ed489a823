"""User hook modules, copied verbatim from beside p4.sdl."""
