"""The pages, one module per page (signin, overview, revisions, fleet, audit, actions,
tokens): each `add(router, pages)` registers its routes on the router that
`reconciler.pages.router.make_pages_router` assembles; `context.Pages` is what they share
(the read model, the audit log, the tokens, the settings, sessions, rendering, forms)."""
