"""Serving: the BentoML service (:mod:`serving.service`) and the helpers it shares with the demo
(input checks, the batching engine, overlays and PNG encoding). Importing this package stays
light; BentoML, PyTorch and Gradio load only in the modules that need them."""
