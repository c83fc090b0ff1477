"""The application: the `ghostly` command (cli), the service entry point (service_main), the
container health probe (healthcheck), code generation (protogen) and the commands over the EMG
core (analyze) and the legacy migration (legacy). It imports libs and services; nothing in
libs or services imports it."""
