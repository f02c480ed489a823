"""User hook modules, copied verbatim from beside windows.sdl."""
