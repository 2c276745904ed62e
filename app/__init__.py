"""The Gradio demo of the segmentation service (``python -m app``; mounted at ``/ui`` by
:mod:`serving.service`). The UI lives in :mod:`app.ui`; importing this package stays light."""
