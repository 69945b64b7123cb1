# Image-wide salt states that are not part of a project (makina's
# /srv/salt/custom.sls). Projects keep their own states in
# /srv/projects/<name>/project/.salt/.
{}
