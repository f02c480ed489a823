"""User hook modules, copied verbatim from beside hook_calls.sdl."""
