"""The admin REST API: the endpoint table and its OpenAPI document (:mod:`.api`), input schemas (:mod:`.schema`)."""
