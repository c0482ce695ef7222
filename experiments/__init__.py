"""dlfun experiments: ``python -m experiments`` lists them, ``python -m experiments.<name>``
runs one (``--help`` explains its flags)."""
