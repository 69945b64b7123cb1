# Defaults of the project's pillar (makina layering): mc-launcher's
# templates see this data deep-merged with the effective
# /srv/projects/<name>/pillar/init.sls, i.e. the image default or the data
# volume's configuration/pillar.sls. Override only what you change:
#
#   makina-projects.example:
#     data:
#       site_name: My shop
makina-projects.example:
  data:
    site_name: An example makina project
    greeting: Hello from the image's default pillar
    host: 0.0.0.0
    port: 8080
    # seconds between two heartbeats of the worker
    worker_interval: 5
