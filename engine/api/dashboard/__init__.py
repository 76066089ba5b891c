"""The marketers' dashboard at `/`: server-rendered pages, inline SVG charts, no script.

Auth is an account's token: `Authorization: Bearer`, or a session cookie set by the login
form (auth, api/sessions.py). Every page is Jinja2 with autoescape on and a
Content-Security-Policy that allows no script at all (render, with the templates' filters
and charts); what the pages show comes from data, the handlers are in pages.
"""

from __future__ import annotations

from aiohttp import web

from engine.api.dashboard import act
from engine.api.dashboard.auth import COOKIE, login, logout
from engine.api.dashboard.data import merge_rules, parse_since, since_context
from engine.api.dashboard.message_pages import message_detail_page, messages_page
from engine.api.dashboard.overview import overview
from engine.api.dashboard.pages import rule_page, templates_page
from engine.api.dashboard.preview import template_page
from engine.api.dashboard.render import render
from engine.api.dashboard.users import users_page

__all__ = [
    "COOKIE",
    "add_routes",
    "merge_rules",
    "parse_since",
    "render",
    "since_context",
]


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", overview)
    router.add_post("/ui/login", login)
    router.add_post("/ui/logout", logout)
    router.add_get("/ui/rules/{rule}", rule_page)
    router.add_get("/ui/messages", messages_page)
    router.add_get("/ui/messages/{message_id}", message_detail_page)
    router.add_get("/ui/users", users_page)
    router.add_get("/ui/templates", templates_page)
    router.add_get("/ui/templates/{name}", template_page)
    act.add_routes(router)  # the action forms: pause, resume, end, test send
