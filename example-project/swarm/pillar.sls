# The example's pillar override, deployed as a Docker config (stack.yml):
# only what differs from the project's .salt/PILLAR.sample. host and port
# stay 0.0.0.0:8080, where clients on the stack's network reach web.
# Edit, bump PILLAR_VERSION, deploy again: a rolling update.
makina-projects.example:
  data:
    site_name: Example on Docker Swarm
    greeting: Hello from the example-pillar Docker config
