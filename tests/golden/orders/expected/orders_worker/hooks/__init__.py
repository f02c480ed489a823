"""User hook modules, copied verbatim from beside orders.sdl."""
