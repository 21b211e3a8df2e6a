"""The Gradio web app: the face of Dandelion for people, over the functions' HTTP APIs and MLflow's client.

`web.clients` talks to the platform, `web.views` turns its answers into what the page shows, and
`web.app` lays out the page and wires each control to one of them.
"""
