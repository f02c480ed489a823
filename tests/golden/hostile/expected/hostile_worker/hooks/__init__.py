"""User hook modules, copied verbatim from beside hostile.sdl."""
