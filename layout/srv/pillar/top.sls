# Written for salt-call --local: the image-wide pillar, then the project's
# (/srv/pillar/makina-projects/<name> links to /srv/projects/<name>/pillar).
base:
  '*':
    - custom
