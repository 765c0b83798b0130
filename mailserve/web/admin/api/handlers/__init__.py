"""The handlers of the admin API's endpoints, one module per resource; each handler is an ``async``
function of ``(AdminAPI, Call)`` calling the shared service layer
(:class:`mailserve.admin.service.AdminService`).
"""
