require "fileinto";
if allof (exists "subject", not exists "x-spam", anyof (false, header :contains "to" "other")) { fileinto "Logic"; }
