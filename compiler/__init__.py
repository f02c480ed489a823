"""streamc: compile .sdl stream programs into Faust-style worker packages."""
