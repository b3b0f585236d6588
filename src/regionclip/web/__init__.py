"""The local web page of ``regionclip serve`` (:mod:`regionclip.web.app`, one static page)."""
