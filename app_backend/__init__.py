"""The demo app's backend (``app.py`` builds the page from it). What goes where:

- ``service.py``: loading (one loader for registry entries and Load-tab models, through
  ``hub_tools.pull``), browser sessions, and the model cache (``cache.py``, adapters sharing their base
  through ``shared.py``). Its tab-named methods hand over to ``tabs/``.
- ``tabs/<tab>.py``: what one tab computes and draws, as plain Python without gradio (``compare``,
  ``sizes``, ``hybrids``, ``mad``, ``load``), including renderings only that tab uses. A tab function
  takes the service as its first argument.
- ``ui/<tab>.py``: the Gradio builder of one tab (layout, events, error display), nothing else;
  ``ui/common.py`` what the builders share.
- ``render.py``: HTML and table renderings that several tabs use.
- The rest serves every tab: ``registry.py`` (the asset list), ``generation.py`` (streamed decoding),
  ``runtime.py`` (device and memory budget), ``results.py`` and ``model_info.py`` (exports and cards),
  ``formatting.py`` (numbers on screen), ``visitors.py`` (who a request comes from on a public Space, and
  how many jobs one visitor runs at once; ``guard_events`` wraps the page's model events).

Library code does not live here: what the app needs from PEFT's or MoRe's internals goes into
``mad_models`` behind a public function (e.g. ``mad_models.fused_adapters``), which the app calls.
"""
