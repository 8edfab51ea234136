"""Operators: job operators (job_ops), the sidebar's input lists (input_ops), backend
management (backend_ops), model downloads (model_ops); session holds the backend connection
and the running job; result_import brings a result into the scene."""
