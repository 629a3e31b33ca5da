"""Safe readers for untrusted checkpoint files; none imports torch or builds anything but plain data.

Layers, bottom up: :mod:`.arrays` (bounded, bounds-checked tensor copies) <- :mod:`.pt`
(charrnn's zip + pickle ``.pt``) and :mod:`.t7` (Lua Torch7 ``.t7``, and torch-rnn's model in it).
Each reader returns plain Python values and NumPy arrays; :mod:`charrnn.checkpoint.schema`
validates them.
"""
