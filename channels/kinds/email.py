"""Email: an address on the profile, subject and HTML and/or text; marketing mail carries
the open pixel and one-click unsubscribe (SPEC 5, RFC 8058)."""

from __future__ import annotations

from typing import Any

from .base import ChannelKind, MarketingLinks, html, text


class Email(ChannelKind):
    name = "email"
    address_from = ("email",)
    fields = {
        "subject": text(required=True),
        "html": html(),
        "text": text(),
        "from": text(),
        "reply_to": text(),
        "preheader": text(),
    }
    needs_any = ("html", "text")

    def marketing(self, payload: dict[str, Any], links: MarketingLinks) -> dict[str, str]:
        """The open pixel at the end of the HTML body, and the List-Unsubscribe URL (the
        SMTP adapter adds the mailto: target and List-Unsubscribe-Post)."""
        if isinstance(payload.get("html"), str):
            pixel = f'<img src="{links.open_url}" width="1" height="1" alt="" style="display:none">'
            body = payload["html"]
            at = body.lower().rfind("</body>")
            payload["html"] = body[:at] + pixel + body[at:] if at >= 0 else body + pixel
        return {"List-Unsubscribe": links.unsubscribe_url}
