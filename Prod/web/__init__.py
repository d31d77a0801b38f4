"""The web app: one page to try the platform (assistant, a user's recommendations) and operate it
(model versions, training, store health, serving metrics), served by its own small service."""
