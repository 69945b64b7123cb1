# The image's default pillar for this project. At start, mc-launcher
# replaces it with the data volume's configuration/pillar.sls when there is
# one (a copy of this file is kept in the launcher's state dir and comes
# back when the override is removed).
{}
