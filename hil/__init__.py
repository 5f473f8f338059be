"""Hardware-in-the-loop scenarios (see hil/README.md); a package so its conftest does not clash with tests/."""
