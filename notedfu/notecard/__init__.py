"""The Notecard side: links, the request client and the DFU download engine."""
